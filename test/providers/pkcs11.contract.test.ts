import { describeKeyWrappingContract } from "./contract/key-wrapping-contract.js";
import { pkcs11Target } from "./targets/pkcs11.js";

describeKeyWrappingContract(pkcs11Target());
