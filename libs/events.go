package fnhook

// Queue and exchange names: the contract between mgmt, builder, handler and gateway.
const (
	// BuildQueue is the durable work queue of module builds; messages are BuildRequest.
	BuildQueue = "fnhook.module.build"
	// BuildDLQ receives builds that failed transiently too many times.
	BuildDLQ = "fnhook.module.build.dlq"
	// EventsExchange is the topic exchange every event is published to.
	EventsExchange = "fnhook.events"

	// EventFunctionChanged is published on every function create, update and delete.
	EventFunctionChanged = "function.changed"
	// EventModuleReady is published when a module's tarball is stored.
	EventModuleReady = "module.ready"
	// EventModuleFailed is published when a module failed to build for good.
	EventModuleFailed = "module.failed"
	// EventTenantDeleted is published when a tenant is deleted.
	EventTenantDeleted = "tenant.deleted"
)

// BuildRequest asks for one exact module version to be built.
type BuildRequest struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// FunctionChanged tells that a function was created, updated (Version) or deleted.
type FunctionChanged struct {
	Tenant   string `json:"tenant"`
	Function string `json:"function"`
	Version  int    `json:"version"`
	Deleted  bool   `json:"deleted,omitempty"`
}

// ModuleEvent tells that a module is ready or failed (Error says why).
type ModuleEvent struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Error   string `json:"error,omitempty"`
}

// TenantDeleted tells that a tenant and everything of it is gone.
type TenantDeleted struct {
	Tenant string `json:"tenant"`
}
