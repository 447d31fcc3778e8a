// Typed errors. None of them carries a token: messages and fields are built
// from server error codes and descriptions only.

/** Base class of every error the SDK throws on purpose. */
export class TokenwarmError extends Error {
  override name = "TokenwarmError";
  /** HTTP status of the answer, when there was one. */
  readonly status: number | undefined;
  /** The server's error code (problem `code` or OAuth `error`), when there was one. */
  readonly code: string | undefined;

  constructor(message: string, status?: number, code?: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The redirect's state is not the one of this authorization: ignore the redirect. */
export class StateMismatch extends TokenwarmError {
  override name = "StateMismatch";
}

/** The authorization ended with an error (access_denied: the user said no). Nothing was stored. */
export class AuthorizationFailed extends TokenwarmError {
  override name = "AuthorizationFailed";
}

/**
 * The device session is over (invalid_grant: revoked, idle for 90 days,
 * reuse detected; or 401 right after a refresh). The stored session was
 * deleted; app data is kept. Run the connect flow again.
 */
export class SessionEnded extends TokenwarmError {
  override name = "SessionEnded";
}

/**
 * 409 reauth_required: the Salesforce grant is dead. Keep local data and
 * open reauthUrl through authorize({ reauthUrl }); the connection ID stays.
 */
export class ReauthRequired extends TokenwarmError {
  override name = "ReauthRequired";
  readonly connectionId: string;
  readonly reauthUrl: string | undefined;

  constructor(message: string, connectionId: string, reauthUrl: string | undefined) {
    super(message, 409, "reauth_required");
    this.connectionId = connectionId;
    this.reauthUrl = reauthUrl;
  }
}

/** 409 connection_revoked: an administrator revoked the connection. */
export class ConnectionRevoked extends TokenwarmError {
  override name = "ConnectionRevoked";
}

/** 404: the connection is gone or not this user's. */
export class NotFound extends TokenwarmError {
  override name = "NotFound";
}

/** 429: wait retryAfter seconds. */
export class RateLimited extends TokenwarmError {
  override name = "RateLimited";
  readonly retryAfter: number;

  constructor(message: string, retryAfter: number, code?: string) {
    super(message, 429, code);
    this.retryAfter = retryAfter;
  }
}

/** 503 (or a network failure): keep the session, wait retryAfter seconds, retry. */
export class Unavailable extends TokenwarmError {
  override name = "Unavailable";
  readonly retryAfter: number;

  constructor(message: string, retryAfter: number, status?: number, code?: string) {
    super(message, status, code);
    this.retryAfter = retryAfter;
  }
}

/** An answer the SDK did not expect (400 invalid_request: an SDK bug). */
export class UnexpectedResponse extends TokenwarmError {
  override name = "UnexpectedResponse";
}

/**
 * Seconds from a Retry-After header (seconds or an HTTP date), at least 1;
 * fallback when it is missing or unreadable.
 */
export function retryAfterSeconds(header: string | null, nowMs: number, fallback: number): number {
  if (header === null || header.trim() === "") return fallback;
  const h = header.trim();
  if (/^\d+$/.test(h)) return Math.max(1, parseInt(h, 10));
  const at = Date.parse(h);
  if (Number.isNaN(at)) return fallback;
  return Math.max(1, Math.ceil((at - nowMs) / 1000));
}
