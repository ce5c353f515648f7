package main

import (
	"bufio"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/fnhook/fnhook/libs/server"
)

// TestTenantLogsInHandlerLog: what a function writes with console.* reaches the handler's
// own log as JSON lines naming the tenant, the function and the level.
func TestTenantLogsInHandlerLog(t *testing.T) {
	t.Parallel()
	f := setup(t)
	h := f.sharedHandler(t)
	tenant := tenantName()
	marker := "marker-" + server.NewID()[:12]
	f.putFunction(t, tenant, "chatty", 1, `module.exports = async () => { console.log("said `+marker+`"); console.warn("warned `+marker+`"); return "ok"; };`, nil, nil)
	route := f.resolve(t, h, tenant, "chatty")
	if s, b := f.call(t, route, "chatty", "", nil); s != 200 || b != "ok" {
		t.Fatalf("call = %d %q", s, b)
	}
	want := map[string]string{"said " + marker: "INFO", "warned " + marker: "WARN"}
	waitFor(t, "the function's lines in the handler's log", 10*time.Second, func() bool {
		file, err := os.Open(h.logPath)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		found := 0
		sc := bufio.NewScanner(file)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			msg, _ := l["msg"].(string)
			level, ok := want[msg]
			if !ok {
				continue
			}
			if l["tenant"] != tenant || l["function"] != "chatty" || l["level"] != level || l["source"] != "function" {
				t.Fatalf("handler log line %v, want tenant %s, function chatty, level %s", l, tenant, level)
			}
			found++
		}
		return found == len(want)
	})
}
