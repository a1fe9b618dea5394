/** Something that happened to a key, as subscribers (client DEK caches) see it. */
export type KeyEventType =
  | "KEY_CREATED"
  | "DEK_ROTATED"
  | "KEK_ROTATED"
  | "KEY_REVOKED"
  | "KEY_RESTORED"
  | "KEY_DESTROYED"
  | "DEK_VERSION_REVOKED"
  | "DEK_VERSION_PURGED"
  | "KEK_VERSION_DESTROYED"
  | "CUSTOMER_KEY_UNAVAILABLE"
  | "CUSTOMER_KEY_AVAILABLE";

export interface KeyEvent {
  /** Increasing in commit order; the resume point of a subscriber. */
  readonly eventId: number;
  readonly tenantId: string;
  readonly keyId: string;
  readonly type: KeyEventType;
  readonly dekVersion: number | undefined;
  readonly kekVersion: number | undefined;
  readonly time: Date;
}

export type NewKeyEvent = Omit<KeyEvent, "eventId" | "dekVersion" | "kekVersion"> & {
  readonly dekVersion?: number | undefined;
  readonly kekVersion?: number | undefined;
};
