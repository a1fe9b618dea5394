/**
 * During a switch of root provider: says once, in the log, when the previous
 * root provider is no longer needed (switched, and no KEK left under it), so
 * the operator knows when KMS_ROOT_PROVIDER_PREVIOUS may be removed.
 * GetRootKeyStatus says the same at any time.
 */
import type { KmsContext } from "../service/kms-context.js";
import { previousRootProviderUsage } from "../service/root-provider-switch.js";
import type { BackgroundLogger } from "./job-handler.js";

export function rootProviderSwitchTask(logger: BackgroundLogger): (context: KmsContext, now: Date) => Promise<void> {
  let reported = false;
  return async (context) => {
    if (reported || context.rootProvider.providerSwitch === undefined) return;
    const usage = await previousRootProviderUsage(context);
    if (usage?.removable !== true) return;
    reported = true;
    logger.warn("the previous root provider is no longer needed: remove KMS_ROOT_PROVIDER_PREVIOUS and its KMS_PREVIOUS_* settings", {
      previous_provider: usage.provider,
      provider: context.rootProvider.name,
      root_key_id: context.rootProvider.currentKeyId,
    });
  };
}
