package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestBadConfigurationNamesTheVariable: each bad setting stops the gateway at start with
// one line that names the variable, and never prints the secret.
func TestBadConfigurationNamesTheVariable(t *testing.T) {
	const secret = "0123456789abcdef-secret"
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no handler secret", map[string]string{}, "FNHOOK_HANDLER_SECRET"},
		{"bad port", map[string]string{"FNHOOK_HANDLER_SECRET": secret, "FNHOOK_LISTEN": "127.0.0.1:http"}, "FNHOOK_LISTEN"},
		{"bad body limit", map[string]string{"FNHOOK_HANDLER_SECRET": secret, "FNHOOK_MAX_BODY": "lots"}, "FNHOOK_MAX_BODY"},
		{"bad timeout", map[string]string{"FNHOOK_HANDLER_SECRET": secret, "FNHOOK_CALL_TIMEOUT": "10"}, "FNHOOK_CALL_TIMEOUT"},
		{"consul unreachable", map[string]string{"FNHOOK_HANDLER_SECRET": secret, "FNHOOK_CONSUL_ADDR": "127.0.0.1:1"}, "FNHOOK_CONSUL_ADDR"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), func(k string) string { return c.env[k] }, &out)
			if err == nil {
				t.Fatal("run started with bad configuration")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") || strings.Contains(msg+out.String(), secret) {
				t.Fatalf("error %q: want one line naming %s, without the secret", msg, c.want)
			}
		})
	}
}
