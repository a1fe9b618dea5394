/**
 * The provider contract against real clouds: `npm run smoke:cloud` (which
 * says first what is configured and what is missing). Each cloud whose
 * variables are absent is skipped, naming them. Not part of `npm test`.
 */
import { describeKeyWrappingContract } from "../contract/key-wrapping-contract.js";
import { cloudSmokeTargets } from "./cloud-targets.js";

for (const target of cloudSmokeTargets(process.env)) describeKeyWrappingContract(target);
