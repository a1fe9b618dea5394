import { describeKeyWrappingContract } from "./contract/key-wrapping-contract.js";
import { gcpKmsTarget } from "./targets/gcp-kms.js";

describeKeyWrappingContract(gcpKmsTarget());
