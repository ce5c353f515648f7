package fnhook

import (
	"regexp"
	"time"
)

// NamePattern is what tenant and function names must match.
var NamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Function build states.
const (
	StatusBuilding = "building"
	StatusReady    = "ready"
	StatusFailed   = "failed"
)

// Limits bound what one tenant may use. Zero values mean "the platform default".
type Limits struct {
	MaxCodeBytes    int `json:"maxCodeBytes,omitempty" dynamodbav:"maxCodeBytes,omitempty"`
	MaxFunctions    int `json:"maxFunctions,omitempty" dynamodbav:"maxFunctions,omitempty"`
	MaxDependencies int `json:"maxDependencies,omitempty" dynamodbav:"maxDependencies,omitempty"`
	MaxTimeoutMs    int `json:"maxTimeoutMs,omitempty" dynamodbav:"maxTimeoutMs,omitempty"`
	MemoryMB        int `json:"memoryMB,omitempty" dynamodbav:"memoryMB,omitempty"`
	MaxConfigBytes  int `json:"maxConfigBytes,omitempty" dynamodbav:"maxConfigBytes,omitempty"`
}

// DefaultLimits are the limits a tenant gets where it sets none.
var DefaultLimits = Limits{
	MaxCodeBytes:    256 << 10,
	MaxFunctions:    100,
	MaxDependencies: 32,
	MaxTimeoutMs:    30000,
	MemoryMB:        256,
	MaxConfigBytes:  16 << 10,
}

// WithDefaults returns l with every zero field taken from d.
func (l Limits) WithDefaults(d Limits) Limits {
	pick := func(v, def int) int {
		if v == 0 {
			return def
		}
		return v
	}
	return Limits{
		MaxCodeBytes:    pick(l.MaxCodeBytes, d.MaxCodeBytes),
		MaxFunctions:    pick(l.MaxFunctions, d.MaxFunctions),
		MaxDependencies: pick(l.MaxDependencies, d.MaxDependencies),
		MaxTimeoutMs:    pick(l.MaxTimeoutMs, d.MaxTimeoutMs),
		MemoryMB:        pick(l.MemoryMB, d.MemoryMB),
		MaxConfigBytes:  pick(l.MaxConfigBytes, d.MaxConfigBytes),
	}
}

// Tenant is a customer of the SaaS that embeds fnhook.
type Tenant struct {
	Name      string    `json:"name" dynamodbav:"name"`
	Limits    Limits    `json:"limits" dynamodbav:"limits"`
	CreatedAt time.Time `json:"createdAt" dynamodbav:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt" dynamodbav:"updatedAt"`
}

// Token is a tenant's API token as stored: only the hash of its secret is kept.
type Token struct {
	ID        string    `json:"id" dynamodbav:"id"`
	Tenant    string    `json:"tenant" dynamodbav:"tenant"`
	Hash      string    `json:"-" dynamodbav:"hash"`
	CreatedAt time.Time `json:"createdAt" dynamodbav:"createdAt"`
}

// Function is a tenant's function: its source, dependencies and build state.
type Function struct {
	Tenant string `json:"tenant" dynamodbav:"tenant"`
	Name   string `json:"name" dynamodbav:"name"`
	// Version increases by one on every change.
	Version int    `json:"version" dynamodbav:"version"`
	Code    string `json:"code,omitempty" dynamodbav:"code"`
	// Dependencies are the ranges the tenant asked for; ResolvedDependencies the exact
	// versions they resolved to when the function was saved.
	Dependencies         map[string]string `json:"dependencies" dynamodbav:"dependencies"`
	ResolvedDependencies map[string]string `json:"resolvedDependencies" dynamodbav:"resolved"`
	Configuration        map[string]string `json:"configuration,omitempty" dynamodbav:"configuration"`
	TimeoutMs            int               `json:"timeoutMs" dynamodbav:"timeoutMs"`
	Status               string            `json:"status" dynamodbav:"status"`
	// Pending lists the modules ("name@version") still being built.
	Pending   []string  `json:"pending,omitempty" dynamodbav:"pending,omitempty"`
	Error     string    `json:"error,omitempty" dynamodbav:"error,omitempty"`
	CreatedAt time.Time `json:"createdAt" dynamodbav:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt" dynamodbav:"updatedAt"`
}

// Module states.
const (
	ModuleBuilding = "building"
	ModuleReady    = "ready"
	ModuleFailed   = "failed"
)

// Module is the record of one built npm module closure, name@version, shared by all tenants.
type Module struct {
	Name    string `json:"name" dynamodbav:"name"`
	Version string `json:"version" dynamodbav:"version"`
	Status  string `json:"status" dynamodbav:"status"`
	SHA256  string `json:"sha256,omitempty" dynamodbav:"sha256,omitempty"`
	Size    int64  `json:"size,omitempty" dynamodbav:"size,omitempty"`
	Error   string `json:"error,omitempty" dynamodbav:"error,omitempty"`
	// Owner and ClaimExpires mark a build in progress; an expired claim may be taken over.
	Owner string `json:"-" dynamodbav:"owner,omitempty"`
	// ClaimUntil is the claim's expiry in Unix milliseconds (a number, so it compares).
	ClaimUntil int64     `json:"-" dynamodbav:"claimUntil,omitempty"`
	Attempts   int       `json:"attempts,omitempty" dynamodbav:"attempts,omitempty"`
	BuiltAt    time.Time `json:"builtAt,omitempty" dynamodbav:"builtAt,omitempty"`
	UpdatedAt  time.Time `json:"updatedAt" dynamodbav:"updatedAt"`
}

// ModuleKey is the canonical "name@version" of a module.
func ModuleKey(name, version string) string { return name + "@" + version }

// ModuleObjectKey is where a module's tarball lives in the blob store.
func ModuleObjectKey(name, version string) string {
	return "modules/" + name + "/" + version + ".tgz"
}

// Route is where a tenant's function can be invoked right now.
type Route struct {
	// Address is host:port of the tenant's runner.
	Address string `json:"address"`
	// Token opens that runner only.
	Token string `json:"token"`
	// Version is the function version loaded there.
	Version int `json:"version"`
	// Cold is true when answering needed an assignment or a load.
	Cold bool `json:"cold"`
}
