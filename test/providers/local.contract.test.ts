import { describeKeyWrappingContract } from "./contract/key-wrapping-contract.js";
import { localTarget } from "./targets/local.js";

describeKeyWrappingContract(localTarget());
