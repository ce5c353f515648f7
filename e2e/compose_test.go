package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
)

// TestComposeFile loads docker-compose.yml with the compose-spec parser (it cannot be run
// on hosts without Docker) and checks that the suite is complete and wired.
func TestComposeFile(t *testing.T) {
	opts, err := cli.NewProjectOptions([]string{filepath.Join("..", "docker-compose.yml")},
		cli.WithName("fnhook"), cli.WithOsEnv, cli.WithWorkingDirectory(".."))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	want := []string{"consul", "nomad", "rabbitmq", "dynamodb", "minio", "gateway", "mgmt", "handler", "builder"}
	for _, name := range want {
		if _, err := p.GetService(name); err != nil {
			t.Errorf("service %s missing: %v", name, err)
		}
	}
	ports := map[string]string{"gateway": "8080", "mgmt": "8081", "handler": "8082", "builder": "8083"}
	for name, port := range ports {
		s, err := p.GetService(name)
		if err != nil {
			continue
		}
		if s.Build == nil || s.Build.Args["SERVICE"] == nil || *s.Build.Args["SERVICE"] != name {
			t.Errorf("%s is not built from the repo's Dockerfile with SERVICE=%s", name, name)
		}
		env := s.Environment
		for _, k := range []string{"FNHOOK_CONSUL_ADDR", "FNHOOK_AMQP_URL", "FNHOOK_DYNAMODB_ENDPOINT", "FNHOOK_S3_ENDPOINT", "FNHOOK_LISTEN"} {
			if env[k] == nil || *env[k] == "" {
				t.Errorf("%s lacks %s", name, k)
			}
		}
		if l := env["FNHOOK_LISTEN"]; l == nil || !strings.HasSuffix(*l, ":"+port) {
			t.Errorf("%s listens on %v, want port %s", name, l, port)
		}
		published := false
		for _, pc := range s.Ports {
			if pc.Published == port && pc.Target == mustAtoi(t, port) {
				published = true
			}
		}
		if !published {
			t.Errorf("%s does not publish port %s", name, port)
		}
		// Every dependency a service names in its env must be a service of the file.
		for _, k := range []string{"FNHOOK_CONSUL_ADDR", "FNHOOK_AMQP_URL", "FNHOOK_DYNAMODB_ENDPOINT", "FNHOOK_S3_ENDPOINT"} {
			host := hostOf(*env[k])
			if _, err := p.GetService(host); err != nil {
				t.Errorf("%s: %s points at %q, which is not a service", name, k, host)
			}
		}
	}
	gw, _ := p.GetService("gateway")
	hd, _ := p.GetService("handler")
	if *gw.Environment["FNHOOK_HANDLER_SECRET"] != *hd.Environment["FNHOOK_HANDLER_SECRET"] {
		t.Error("gateway and handler must share FNHOOK_HANDLER_SECRET")
	}
	if hostOf(*hd.Environment["FNHOOK_NOMAD_ADDR"]) != "nomad" {
		t.Error("the handler must reach the nomad service")
	}
}

// hostOf returns the host of a URL or host:port.
func hostOf(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	if i := strings.LastIndex(s, "@"); i >= 0 {
		s = s[i+1:]
	}
	if i := strings.IndexAny(s, ":/"); i >= 0 {
		s = s[:i]
	}
	return s
}

func mustAtoi(t *testing.T, s string) uint32 {
	var n uint32
	for _, r := range s {
		n = n*10 + uint32(r-'0')
	}
	return n
}
