package api

import (
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// OpenAPI returns the API's OpenAPI 3.1 document, built from the route
// table and the Go types of the bodies.
func (s *Server) OpenAPI() map[string]any {
	schemas := map[string]any{}
	paths := map[string]any{}
	errRef := schemaOf(reflect.TypeOf(ErrorBody{}), schemas)
	param := regexp.MustCompile(`\{([a-z]+)\}`)
	for _, rt := range s.table() {
		op := map[string]any{"summary": rt.summary, "operationId": operationID(rt)}
		var params []any
		for _, m := range param.FindAllStringSubmatch(rt.pattern, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range rt.query {
			params = append(params, map[string]any{"name": q, "in": "query", "schema": map[string]any{"type": "string"}})
		}
		if params != nil {
			op["parameters"] = params
		}
		if rt.in != nil {
			op["requestBody"] = map[string]any{"content": map[string]any{"application/json": map[string]any{"schema": schemaOf(reflect.TypeOf(rt.in), schemas)}}}
		}
		resp := map[string]any{}
		ok := map[string]any{"description": http.StatusText(rt.status)}
		if rt.out != nil {
			ct := "application/json"
			if strings.HasSuffix(rt.pattern, "/stream") {
				ct = "text/event-stream"
			}
			ok["content"] = map[string]any{ct: map[string]any{"schema": schemaOf(reflect.TypeOf(rt.out), schemas)}}
		}
		resp[strconv.Itoa(rt.status)] = ok
		errs := []int{http.StatusInternalServerError}
		if rt.role != "" {
			errs = append(errs, http.StatusUnauthorized, http.StatusForbidden)
		}
		if rt.in != nil || rt.query != nil {
			errs = append(errs, http.StatusBadRequest)
		}
		if strings.Contains(rt.pattern, "{") {
			errs = append(errs, http.StatusNotFound)
		}
		if rt.method != "GET" && rt.role != "" {
			errs = append(errs, http.StatusConflict)
		}
		if rt.pattern == "/api/v1/power" {
			errs = append(errs, http.StatusNotFound) // a node or rack not there
		}
		if strings.HasSuffix(rt.pattern, "}/power") || strings.HasSuffix(rt.pattern, "/boot-device") {
			// The BMC failed or refused; no driver for its kind; no key.
			errs = append(errs, http.StatusConflict, http.StatusBadGateway, http.StatusNotImplemented, http.StatusServiceUnavailable)
		}
		if rt.pattern == "/api/v1/login" {
			errs = append(errs, http.StatusUnauthorized, http.StatusBadRequest)
		}
		for _, c := range errs {
			resp[strconv.Itoa(c)] = map[string]any{"description": http.StatusText(c), "content": map[string]any{"application/json": map[string]any{"schema": errRef}}}
		}
		op["responses"] = resp
		if rt.role != "" {
			op["x-rackboot-role"] = string(rt.role)
			op["security"] = []any{map[string]any{"bearer": []any{}}, map[string]any{"session": []any{}}}
		}
		p, _ := paths[rt.pattern].(map[string]any)
		if p == nil {
			p = map[string]any{}
			paths[rt.pattern] = p
		}
		p[strings.ToLower(rt.method)] = op
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": "rackboot", "version": orDefault(s.Version, "dev"),
			"description": "Network boot and provisioning. Roles: readonly < tech < admin. Web sessions must send X-CSRF-Token on every change."},
		"paths": paths,
		"components": map[string]any{
			"schemas": schemas,
			"securitySchemes": map[string]any{
				"bearer":  map[string]any{"type": "http", "scheme": "bearer"},
				"session": map[string]any{"type": "apiKey", "in": "cookie", "name": SessionCookie},
			},
		},
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func operationID(rt route) string {
	id := strings.ToLower(rt.method)
	for _, part := range strings.Split(strings.TrimPrefix(rt.pattern, "/api/v1/"), "/") {
		part = strings.Trim(part, "{}")
		id += strings.ToUpper(part[:1]) + strings.ReplaceAll(part[1:], ".", "")
	}
	return id
}

var timeType = reflect.TypeOf(time.Time{})

// schemaOf writes the JSON Schema of t, from its JSON tags, naming
// structs in schemas and returning a reference to them.
func schemaOf(t reflect.Type, schemas map[string]any) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t.Kind() == reflect.Pointer:
		inner := schemaOf(t.Elem(), schemas)
		return map[string]any{"anyOf": []any{inner, map[string]any{"type": "null"}}}
	case t.String() == "json.RawMessage" || t.Kind() == reflect.Interface:
		return map[string]any{}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint64, reflect.Uint32:
		return map[string]any{"type": "integer"}
	case reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem(), schemas)}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem(), schemas)}
	case reflect.Struct:
		name := t.Name()
		ref := map[string]any{"$ref": "#/components/schemas/" + name}
		if _, done := schemas[name]; done {
			return ref
		}
		schemas[name] = nil // breaks cycles
		props := map[string]any{}
		var required []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if name == "" {
				name = f.Name
			}
			props[name] = schemaOf(f.Type, schemas)
			if !strings.Contains(opts, "omitempty") {
				required = append(required, name)
			}
		}
		sch := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if required != nil {
			sch["required"] = required
		}
		schemas[name] = sch
		return ref
	}
	return map[string]any{}
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.OpenAPI())
}
