import { describeKeyWrappingContract } from "./contract/key-wrapping-contract.js";
import { awsKmsTarget } from "./targets/aws-kms.js";

describeKeyWrappingContract(awsKmsTarget());
