package webhooks

// KnownTypes is every event type Deliveries accepts, for the contract test.
var KnownTypes = knownTypes
