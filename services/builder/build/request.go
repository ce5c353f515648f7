package build

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	fnhook "github.com/fnhook/fnhook/libs"
)

// maxMessageBytes bounds a build request's body; a real one is well under 300 bytes.
const maxMessageBytes = 4 << 10

// maxNameLength is npm's own limit on package names.
const maxNameLength = 214

// packageName matches npm package names, scoped or not. Upper case is allowed because old
// packages (JSONStream) still have it; a leading dot or underscore is not, which also keeps
// "." and ".." out of the S3 key and the module cache path.
var packageName = regexp.MustCompile(`^(?:@[a-z0-9~-][a-z0-9._~-]*/)?[a-zA-Z0-9~-][a-zA-Z0-9._~-]*$`)

// exactVersion is semver 2.0's own regular expression: an exact version, never a range.
var exactVersion = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
	`(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?` +
	`(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// ParseRequest decodes and checks a build message: a JSON object with an npm package name
// and an exact semver version. Its errors say what is wrong for the log line of a rejected
// message.
func ParseRequest(body []byte) (fnhook.BuildRequest, error) {
	var r fnhook.BuildRequest
	if len(body) > maxMessageBytes {
		return r, fmt.Errorf("message of %d bytes is larger than %d", len(body), maxMessageBytes)
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return r, fmt.Errorf("message is not a JSON build request: %w", err)
	}
	if err := ValidName(r.Name); err != nil {
		return r, err
	}
	if err := ValidVersion(r.Version); err != nil {
		return r, err
	}
	return r, nil
}

// ValidName checks an npm package name.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("module name is missing")
	case len(name) > maxNameLength:
		return fmt.Errorf("module name is longer than %d characters", maxNameLength)
	case !packageName.MatchString(name):
		return fmt.Errorf("module name %q is not a valid npm package name", name)
	}
	return nil
}

// ValidVersion checks that v is one exact semver version (not a range or a tag).
func ValidVersion(v string) error {
	switch {
	case v == "":
		return errors.New("module version is missing")
	case len(v) > 256 || !exactVersion.MatchString(v):
		return fmt.Errorf("module version %q is not an exact semver version", v)
	}
	return nil
}
