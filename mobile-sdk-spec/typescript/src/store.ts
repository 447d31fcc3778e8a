/** What survives an app restart: kept in the platform's secure store. */
export interface StoredSession {
  /** The device refresh token (twr_…). Rotates on every use. */
  refreshToken: string;
  sessionId: string;
  connectionIds: string[];
}

/**
 * The secure store of the device session: Keychain
 * (kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly) on iOS,
 * EncryptedSharedPreferences/Keystore on Android, never AsyncStorage or
 * localStorage in production. save must be durable when it resolves: the
 * SDK stores a rotated refresh token before it uses the new access token.
 */
export interface TokenStore {
  load(): Promise<StoredSession | null>;
  save(session: StoredSession): Promise<void>;
  clear(): Promise<void>;
}

/** A TokenStore in memory, for tests and for web pages that keep nothing. */
export class MemoryTokenStore implements TokenStore {
  private session: StoredSession | null;

  constructor(initial: StoredSession | null = null) {
    this.session = initial ? copy(initial) : null;
  }

  async load(): Promise<StoredSession | null> {
    return this.session ? copy(this.session) : null;
  }

  async save(session: StoredSession): Promise<void> {
    this.session = copy(session);
  }

  async clear(): Promise<void> {
    this.session = null;
  }
}

function copy(s: StoredSession): StoredSession {
  return { refreshToken: s.refreshToken, sessionId: s.sessionId, connectionIds: [...s.connectionIds] };
}
