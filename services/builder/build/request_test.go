package build

import (
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr string
	}{
		{"plain", `{"name":"dayjs","version":"1.11.13"}`, ""},
		{"scoped", `{"name":"@types/node","version":"20.11.5"}`, ""},
		{"prerelease and build", `{"name":"typescript","version":"5.7.0-dev.20241001+sha.1"}`, ""},
		{"legacy upper case", `{"name":"JSONStream","version":"1.3.5"}`, ""},
		{"unknown fields are ignored", `{"name":"ms","version":"2.1.3","why":"x"}`, ""},
		{"not json", `not json`, "not a JSON build request"},
		{"not an object", `"dayjs@1.0.0"`, "not a JSON build request"},
		{"no name", `{"version":"1.0.0"}`, "name is missing"},
		{"range", `{"name":"dayjs","version":"^1.11.0"}`, "not an exact semver"},
		{"tag", `{"name":"dayjs","version":"latest"}`, "not an exact semver"},
		{"leading v", `{"name":"dayjs","version":"v1.0.0"}`, "not an exact semver"},
		{"leading zero", `{"name":"dayjs","version":"01.0.0"}`, "not an exact semver"},
		{"no version", `{"name":"dayjs"}`, "version is missing"},
		{"path traversal", `{"name":"../etc","version":"1.0.0"}`, "not a valid npm package name"},
		{"dot dot scope", `{"name":"@x/..","version":"1.0.0"}`, "not a valid npm package name"},
		{"leading underscore", `{"name":"_private","version":"1.0.0"}`, "not a valid npm package name"},
		{"space", `{"name":"a b","version":"1.0.0"}`, "not a valid npm package name"},
		{"slash without scope", `{"name":"a/b","version":"1.0.0"}`, "not a valid npm package name"},
		{"too long", `{"name":"` + strings.Repeat("a", 215) + `","version":"1.0.0"}`, "longer than 214"},
		{"huge", `{"name":"` + strings.Repeat("a", 5000) + `","version":"1.0.0"}`, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRequest([]byte(tt.body))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ParseRequest: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("ParseRequest error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	b := &Builder{cfg: Config{Backoff: 2_000_000_000}}
	got := []int{}
	for n := 1; n <= 10; n++ {
		got = append(got, int(b.backoff(n).Seconds()))
	}
	want := []int{2, 4, 8, 16, 32, 64, 128, 256, 300, 300}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoff = %v, want %v", got, want)
		}
	}
}
