package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"time"

	"github.com/fnhook/fnhook/bench/platform"
	"github.com/fnhook/fnhook/bench/report"
	"github.com/fnhook/fnhook/bench/stats"
	fnhook "github.com/fnhook/fnhook/libs"
)

// pollEvery is how often a create polls the function until it is ready.
const pollEvery = 5 * time.Millisecond

// maxNewModuleTries bounds the PUTs spent looking for a module nobody built yet.
const maxNewModuleTries = 25

// create times PUT-to-ready of functions whose modules are built, then of one function
// that needs a module nobody built yet.
func (b *Bench) create(ctx context.Context) report.Create {
	t := b.tenant("create")
	if err := b.putTenant(ctx, t); err != nil {
		return report.Create{Error: err.Error()}
	}
	defer func() {
		if err := b.deleteTenant(ctx, t); err != nil {
			b.log.Warn("delete the create tenant", "err", err)
		}
	}()
	var res report.Create
	body := platform.FunctionBody{Code: DepsCode, Dependencies: map[string]string{DepsModule: DepsRange}}
	var samples []time.Duration
	for i := range b.cfg.CreateN {
		var (
			d time.Duration
			f string
		)
		// A 503 (registry or syntax checker slow for a moment) is retried, and the sample
		// is the attempt that went through.
		err := retryUnavailable(ctx, func() (err error) {
			d, f, err = b.timeCreate(ctx, t, fmt.Sprintf("fn-%d", i), body, b.cfg.SettleWait)
			return err
		})
		if err == nil && f != "ready" {
			err = fmt.Errorf("function ended %s", f)
		}
		if err != nil {
			res.Error = fmt.Sprintf("function %d: %v", i, err)
			break
		}
		samples = append(samples, d)
	}
	res.Built = stats.Summarize(samples)
	res.NewModule = b.createNewModule(ctx, t)
	return res
}

// timeCreate PUTs a function and polls it until it is no longer building; it returns the
// time from sending the PUT to seeing the final status, and that status.
func (b *Bench) timeCreate(ctx context.Context, t, name string, body platform.FunctionBody, wait time.Duration) (time.Duration, string, error) {
	t0 := time.Now()
	f, err := b.api.PutFunction(ctx, t, name, body)
	if err != nil {
		return 0, "", err
	}
	if f.Status == "building" {
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		if f, err = b.api.WaitSettled(wctx, t, name, pollEvery); err != nil {
			return 0, "", err
		}
	}
	return time.Since(t0), f.Status, nil
}

// createNewModule tries versions of the candidate packages until a PUT answers building
// (its module was never built), and times that function to its final status.
func (b *Bench) createNewModule(ctx context.Context, t string) *report.NewModule {
	tries := 0
	for _, pkg := range b.cfg.NewModuleCandidates {
		versions, err := npmVersions(ctx, pkg)
		if err != nil {
			b.log.Warn("npm view", "package", pkg, "err", err)
			continue
		}
		for _, v := range versions {
			if tries++; tries > maxNewModuleTries {
				return &report.NewModule{Error: fmt.Sprintf("no unbuilt version among %d tried", maxNewModuleTries)}
			}
			module := pkg + "@" + v
			body := platform.FunctionBody{
				Code:         fmt.Sprintf("const m = require(%q);\nmodule.exports = async () => ({ body: { ok: typeof m } });", pkg),
				Dependencies: map[string]string{pkg: v},
			}
			var (
				t0 time.Time
				f  fnhook.Function
			)
			err := retryUnavailable(ctx, func() (err error) {
				t0 = time.Now()
				f, err = b.api.PutFunction(ctx, t, "newmod", body)
				return err
			})
			if err != nil {
				return &report.NewModule{Module: module, Error: err.Error()}
			}
			if f.Status != "building" {
				continue // built (or failed) before: not new
			}
			b.log.Info("function create with a new module", "module", module)
			wctx, cancel := context.WithTimeout(ctx, b.cfg.NewModuleWait)
			f, err = b.api.WaitSettled(wctx, t, "newmod", pollEvery)
			cancel()
			nm := &report.NewModule{Module: module, Ms: stats.Round3(stats.Ms(time.Since(t0))), Status: f.Status}
			if err != nil {
				nm.Error = err.Error()
			} else if f.Status != "ready" {
				nm.Error = f.Error
			}
			return nm
		}
	}
	return &report.NewModule{Error: fmt.Sprintf("no unbuilt version of %v found", b.cfg.NewModuleCandidates)}
}

// npmVersions lists a package's published versions, newest first, through npm itself
// (its registry and CA settings are the ones the builder uses).
func npmVersions(ctx context.Context, pkg string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "npm", "view", pkg, "versions", "--json").Output()
	if err != nil {
		return nil, fmt.Errorf("npm view %s versions: %w", pkg, err)
	}
	var vs []string
	if err := json.Unmarshal(out, &vs); err != nil {
		var one string
		if json.Unmarshal(out, &one) != nil {
			return nil, fmt.Errorf("npm view %s versions: %.200q", pkg, out)
		}
		vs = []string{one}
	}
	slices.Reverse(vs)
	return vs, nil
}
