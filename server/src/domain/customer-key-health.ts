/** Whether a customer key (BYOK) counts as usable from its recorded health. */

/** Usable unless the last recorded outcome is an error. */
export function isCustomerKeyAvailable(lastSuccess: Date | null, lastError: Date | null): boolean {
  if (lastError === null) return true;
  return lastSuccess !== null && lastSuccess.getTime() > lastError.getTime();
}
