import { describeKeyWrappingContract } from "./contract/key-wrapping-contract.js";
import { azureKeyVaultTarget } from "./targets/azure-keyvault.js";

describeKeyWrappingContract(azureKeyVaultTarget());
