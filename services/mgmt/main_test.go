package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/fnhook/fnhook/libs/store"
	"github.com/fnhook/fnhook/libs/testinfra"
)

// TestRunRefusesBadConfig: a bad or missing setting, or a dependency that does not answer,
// stops the service at start with one error naming the variable.
func TestRunRefusesBadConfig(t *testing.T) {
	t.Parallel()
	good := map[string]string{"FNHOOK_ADMIN_KEY": "0123456789abcdef-admin"}
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no admin key", map[string]string{}, "FNHOOK_ADMIN_KEY"},
		{"short admin key", map[string]string{"FNHOOK_ADMIN_KEY": "short"}, "FNHOOK_ADMIN_KEY"},
		{"bad listen", map[string]string{"FNHOOK_LISTEN": "nowhere"}, "FNHOOK_LISTEN"},
		{"bad registry", map[string]string{"FNHOOK_NPM_REGISTRY": "ftp://x"}, "FNHOOK_NPM_REGISTRY"},
		{"bad timeout", map[string]string{"FNHOOK_SYNTAX_TIMEOUT": "soon"}, "FNHOOK_SYNTAX_TIMEOUT"},
		{"bad default limit", map[string]string{"FNHOOK_DEFAULT_MAX_FUNCTIONS": "0"}, "FNHOOK_DEFAULT_MAX_FUNCTIONS"},
		{"no node", map[string]string{"FNHOOK_NODE": "/nonexistent/node"}, "FNHOOK_NODE"},
		{"dynamodb down", map[string]string{"FNHOOK_DYNAMODB_ENDPOINT": "http://127.0.0.1:1"}, "FNHOOK_DYNAMODB_ENDPOINT"},
		{"rabbitmq down", map[string]string{"FNHOOK_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}, "FNHOOK_AMQP_URL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			if c.name != "no admin key" && c.name != "short admin key" {
				for k, v := range good {
					env[k] = v
				}
			}
			for k, v := range c.env {
				env[k] = v
			}
			if c.name == "rabbitmq down" {
				// DynamoDB is reached first and makes the table: a fresh one, dropped after.
				ti := testinfra.Start(t)
				table := testinfra.Name("t")
				env["FNHOOK_DYNAMODB_ENDPOINT"], env["FNHOOK_DYNAMODB_TABLE"] = ti.DynamoDB, table
				env["FNHOOK_AWS_ACCESS_KEY_ID"], env["FNHOOK_AWS_SECRET_ACCESS_KEY"] = "local", "local"
				t.Cleanup(func() {
					if s, err := store.Open(context.Background(), ti.StoreConfig(table)); err == nil {
						_ = s.DeleteTable(context.Background())
					}
				})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			err := run(ctx, func(k string) string { return env[k] }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "guest:guest") {
				t.Fatalf("run = %v; want one line naming %s", err, c.want)
			}
			if strings.Contains(err.Error(), good["FNHOOK_ADMIN_KEY"]) {
				t.Errorf("error shows the admin key: %v", err)
			}
		})
	}
}
