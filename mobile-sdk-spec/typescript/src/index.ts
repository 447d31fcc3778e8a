export { TokenwarmClient } from "./client.js";
export type {
  AuthorizationRequest,
  AuthorizeOptions,
  Connection,
  DeviceSessionInfo,
  PullOptions,
  SalesforceToken,
  TokenwarmOptions,
} from "./client.js";
export { type CryptoProvider, webCryptoProvider } from "./crypto.js";
export { MemoryTokenStore, type StoredSession, type TokenStore } from "./store.js";
export {
  AuthorizationFailed,
  ConnectionRevoked,
  NotFound,
  RateLimited,
  ReauthRequired,
  SessionEnded,
  StateMismatch,
  TokenwarmError,
  Unavailable,
  UnexpectedResponse,
} from "./errors.js";
export type { paths } from "./generated/openapi.js";
