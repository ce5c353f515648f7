package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/labstack/echo/v4"

	fnhook "github.com/fnhook/fnhook/libs"
)

// decodeBody reads the request body (at most limit bytes) into v, refusing unknown fields,
// wrong types and trailing data with a message that names the field. An empty body is
// allowed only when emptyOK.
func decodeBody(c echo.Context, limit int64, v any, emptyOK bool) error {
	body := http.MaxBytesReader(c.Response(), c.Request().Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) && emptyOK {
			return nil
		}
		return decodeError(err, v, limit)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return decodeError(err, v, limit)
		}
		return fnhook.Errorf(fnhook.CodeInvalid, "the body must hold one JSON object and nothing after it")
	}
	return nil
}

func decodeError(err error, v any, limit int64) error {
	var mbe *http.MaxBytesError
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return fnhook.Errorf(fnhook.CodeTooLarge, "the request body is larger than %d bytes", limit)
	case errors.Is(err, io.EOF):
		return fnhook.Errorf(fnhook.CodeInvalid, "the request body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fnhook.Errorf(fnhook.CodeInvalid, "the body is not valid JSON: it ends too early")
	case errors.As(err, &syn):
		return fnhook.Errorf(fnhook.CodeInvalid, "the body is not valid JSON at byte %d: %s", syn.Offset, strings.TrimPrefix(syn.Error(), "json: "))
	case errors.As(err, &typ):
		return typeError(typ, v)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return fnhook.Errorf(fnhook.CodeInvalid, "unknown field %s; allowed fields: %s", field, strings.Join(fieldNames(reflect.TypeOf(v)), ", "))
	default:
		return fnhook.Errorf(fnhook.CodeInvalid, "the body is not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
}

// typeError explains a JSON value of the wrong type in terms of JSON, not Go.
func typeError(e *json.UnmarshalTypeError, v any) error {
	got := e.Value
	if strings.HasPrefix(got, "number ") {
		got = "the number " + strings.TrimPrefix(got, "number ")
	}
	if e.Field == "" {
		return fnhook.Errorf(fnhook.CodeInvalid, "the body must be a JSON object, not %s", article(got))
	}
	// A wrong value inside a map names the map's field and the element's type.
	if ft, ok := fieldType(reflect.TypeOf(v), e.Field); ok && ft.Kind() == reflect.Map && e.Type.Kind() != reflect.Map {
		return fnhook.Errorf(fnhook.CodeInvalid, "field %s must be an object whose values are %s; one value is %s",
			e.Field, plural(e.Type), article(got))
	}
	want := jsonType(e.Type)
	if e.Type.Kind() == reflect.Int && strings.HasPrefix(e.Value, "number") {
		return fnhook.Errorf(fnhook.CodeInvalid, "field %s must be a whole number in range, not %s", e.Field, got)
	}
	return fnhook.Errorf(fnhook.CodeInvalid, "field %s must be %s, not %s", e.Field, want, article(got))
}

func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "a " + t.Kind().String()
}

func plural(t reflect.Type) string {
	switch s := jsonType(t); s {
	case "a string":
		return "strings"
	case "a number":
		return "numbers"
	default:
		return s
	}
}

func article(jsonKind string) string {
	switch jsonKind {
	case "object", "array":
		return "an " + jsonKind
	case "string", "number", "bool":
		return "a " + jsonKind
	}
	return jsonKind
}

// fieldType finds the type of the dotted JSON field path in t.
func fieldType(t reflect.Type, path string) (reflect.Type, bool) {
	for _, part := range strings.Split(path, ".") {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return nil, false
		}
		found := false
		for i := range t.NumField() {
			f := t.Field(i)
			if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name == part {
				t, found = f.Type, true
				break
			}
		}
		if !found {
			return nil, false
		}
	}
	return t, true
}

// fieldNames lists the JSON fields of the struct t points to.
func fieldNames(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var names []string
	if t.Kind() != reflect.Struct {
		return nil
	}
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}
