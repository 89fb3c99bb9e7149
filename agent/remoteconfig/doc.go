// Package remoteconfig is central IT's signed configuration for a fleet of agents:
// ed25519 keys, compact JWS documents (go-jose, alg EdDSA), the checks an agent makes
// before it lets a document near its running config (trusted key, target, version,
// expiry), and the small on-disk state an agent keeps (the last-known-good document
// and the version floor per target).
//
// It does not apply anything: merging a document into the local config and checking
// the local limits belong to agent/config, swapping components to the agent.
package remoteconfig
