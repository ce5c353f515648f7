package syntax

import (
	"context"
	"strings"
	"testing"

	fnhook "github.com/fnhook/fnhook/libs"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, code, kind string
		wantErr          []string // substrings of the message; nil: valid
	}{
		{"cjs", "module.exports = async (ctx) => ({ body: 'hi' });\n", CommonJS, nil},
		{"esm export", "export default async (ctx) => ({ body: 'hi' });\n", ESModule, nil},
		{"esm import", "import dayjs from 'dayjs';\nexport default async () => ({ body: dayjs().year() });\n", ESModule, nil},
		{"esm top-level await", "const x = await Promise.resolve(1);\nexport default () => x;\n", ESModule, nil},
		{"cjs dynamic import", "module.exports = async () => (await import('dayjs')).default;\n", CommonJS, nil},
		{"cjs error", "const a = 1;\nfoo bar\n", "", []string{"line 2:", "SyntaxError: Unexpected identifier 'bar'", "foo bar"}},
		{"esm error", "import x from 'y';\nexport default (\n", "", []string{"line 3:", "SyntaxError: Unexpected end of input"}},
		{"unclosed", "module.exports = function () {\n", "", []string{"SyntaxError", "Unexpected end of input"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kind, err := c.Check(context.Background(), tc.code)
			if tc.wantErr == nil {
				if err != nil || kind != tc.kind {
					t.Fatalf("Check = %q, %v; want %q, nil", kind, err, tc.kind)
				}
				return
			}
			if fnhook.ErrorCode(err) != fnhook.CodeSyntaxError || fnhook.StatusOf(err) != 422 {
				t.Fatalf("Check = %v; want a 422 syntax_error", err)
			}
			msg := fnhook.ErrorMessage(err)
			for _, w := range tc.wantErr {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, "fnhook-check-") || strings.Contains(msg, "/tmp") {
				t.Errorf("message leaks the temp path: %q", msg)
			}
		})
	}
}
