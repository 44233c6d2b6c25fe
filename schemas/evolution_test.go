package schemas_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/schemas"
)

// baselineFile is delivery-event.v1.json as consumers last saw it: the
// schema may only grow from it by the additive changes v1 allows.
const baselineFile = "testdata/delivery-event.v1.baseline.json"

// evolutionRule is the rule a failing guard states, whatever failed.
const evolutionRule = `The rule (docs/events.md, "Versioning"): additive changes stay v1: a new optional field
(not in "required"), a new event_type or provider value. Anything else is a v2: a new schema
file, published under a new ce_type version (e.g. delivery.status_changed.v2), so that a v1
consumer, which skips event types it does not know, never receives it.`

// recordBaseline says how an allowed change is recorded.
const recordBaseline = `After an allowed (additive) change, record it as the new baseline in the same commit:
    cp schemas/delivery-event.v1.json schemas/testdata/delivery-event.v1.baseline.json`

// annotations are keywords that describe but do not constrain, so changing
// them never breaks a consumer.
var annotations = map[string]bool{
	"title": true, "description": true, "$comment": true, "examples": true,
	"default": true, "deprecated": true, "readOnly": true, "writeOnly": true,
}

// decodeSchema decodes a schema with numbers kept exact, so that comparing
// two schemas never depends on float rounding.
func decodeSchema(t *testing.T, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var s map[string]any
	require.NoError(t, dec.Decode(&s))
	return s
}

// breakingChanges returns one line for every difference between the
// baseline schema base and the schema cur that breaks a consumer of base,
// each starting with the schema location as a JSON pointer fragment. It is
// empty when cur only adds what v1 allows.
//
// A consumer of base can be hurt two ways: records already in the topic,
// valid under base, that cur rejects (a consumer validating with the newer
// schema, or replaying the topic); and records valid under cur that base's
// consumer does not expect. So both narrowing and widening break, except
// the additions v1 promises consumers must tolerate: new optional fields
// and new values of open enums.
func breakingChanges(base, cur map[string]any) []string {
	var out []string
	diffSchema("", base, cur, &out)
	return out
}

// diffSchema compares one schema location, keyword by keyword.
func diffSchema(path string, base, cur map[string]any, out *[]string) {
	report := func(format string, args ...any) {
		*out = append(*out, "#"+path+": "+fmt.Sprintf(format, args...))
	}
	keys := slices.Sorted(maps.Keys(base))
	for k := range cur {
		if _, ok := base[k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		b, inBase := base[k]
		c, inCur := cur[k]
		switch {
		case annotations[k]:
			// Wording may change freely.
		case k == "properties":
			diffSchemaMap(path+"/"+k, asMap(b), asMap(c), "field", out)
		case k == "$defs" || k == "definitions":
			diffSchemaMap(path+"/"+k, asMap(b), asMap(c), "definition", out)
		case k == "patternProperties":
			diffSchemaMap(path+"/"+k, asMap(b), asMap(c), "pattern", out)
		case k == "required":
			was, is := stringSet(b), stringSet(c)
			for _, name := range slices.Sorted(maps.Keys(was)) {
				if !is[name] {
					report("%q is no longer required: consumers rely on every v1 field being present", name)
				}
			}
			for _, name := range slices.Sorted(maps.Keys(is)) {
				if !was[name] {
					report("%q is newly required: records already in the topic lack it (add a field as optional)", name)
				}
			}
		case k == "type":
			was, is := typeSet(b, inBase), typeSet(c, inCur)
			if !reflect.DeepEqual(was, is) {
				report("type changed from %s to %s: a narrowed type rejects records already in the topic, "+
					"a widened one (e.g. nullable) gives consumers values they do not expect", typeString(was), typeString(is))
			}
		case k == "enum":
			diffEnum(path, b, c, inBase, inCur, report)
		case k == "items" || k == "additionalProperties" || k == "not" || k == "contains" ||
			k == "propertyNames" || k == "if" || k == "then" || k == "else":
			bm, bok := b.(map[string]any)
			cm, cok := c.(map[string]any)
			if bok && cok {
				diffSchema(path+"/"+k, bm, cm, out)
			} else if !reflect.DeepEqual(b, c) {
				report("%s changed from %s to %s", k, jsonText(b, inBase), jsonText(c, inCur))
			}
		case k == "allOf" || k == "anyOf" || k == "oneOf" || k == "prefixItems":
			bl, _ := b.([]any)
			cl, _ := c.([]any)
			if len(bl) != len(cl) {
				report("%s changed from %d to %d schemas", k, len(bl), len(cl))
				continue
			}
			for i := range bl {
				bm, bok := bl[i].(map[string]any)
				cm, cok := cl[i].(map[string]any)
				if bok && cok {
					diffSchema(fmt.Sprintf("%s/%s/%d", path, k, i), bm, cm, out)
				} else if !reflect.DeepEqual(bl[i], cl[i]) {
					report("%s/%d changed", k, i)
				}
			}
		default:
			// Every other keyword (const, format, pattern, minLength,
			// additionalProperties: false, $id, ...) constrains or
			// identifies the payload: any change to it is not additive.
			if !reflect.DeepEqual(b, c) {
				report("%s changed from %s to %s", k, jsonText(b, inBase), jsonText(c, inCur))
			}
		}
	}
}

// diffSchemaMap compares keywords whose value maps names to schemas:
// properties (what is "field"), $defs and definitions ("definition"),
// patternProperties ("pattern"). A name that disappears is removed or
// renamed. A new field or definition is allowed (whether a new field is
// required is checked with "required"); a new pattern is not, because it
// constrains fields that matched none before.
func diffSchemaMap(path string, base, cur map[string]any, what string, out *[]string) {
	for _, name := range slices.Sorted(maps.Keys(base)) {
		c, ok := cur[name]
		if !ok {
			*out = append(*out, fmt.Sprintf("#%s/%s: %s %q removed or renamed", path, name, what, name))
			continue
		}
		bm, bok := base[name].(map[string]any)
		cm, cok := c.(map[string]any)
		if bok && cok {
			diffSchema(path+"/"+name, bm, cm, out)
		} else if !reflect.DeepEqual(base[name], c) {
			*out = append(*out, fmt.Sprintf("#%s/%s: %s changed", path, name, what))
		}
	}
	if what != "pattern" {
		return
	}
	for _, name := range slices.Sorted(maps.Keys(cur)) {
		if _, ok := base[name]; !ok {
			*out = append(*out, fmt.Sprintf("#%s/%s: pattern added", path, name))
		}
	}
}

// diffEnum allows new values of an open enum and nothing else: a removed
// value rejects records already in the topic, null added makes the field
// nullable, a value added to a closed enum breaks its promise, and an enum
// dropped altogether allows any value.
func diffEnum(path string, b, c any, inBase, inCur bool, report func(string, ...any)) {
	switch {
	case !inBase:
		report("enum added: records already in the topic may hold other values")
		return
	case !inCur:
		report("enum removed: any value is now allowed")
		return
	}
	was, is := valueSet(b), valueSet(c)
	for _, v := range slices.Sorted(maps.Keys(was)) {
		if !is[v] {
			report("enum value %s removed: records already in the topic hold it", v)
		}
	}
	for _, v := range slices.Sorted(maps.Keys(is)) {
		switch {
		case was[v]:
		case v == "null":
			report("null added to the enum: the field becomes nullable")
		}
	}
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// stringSet returns the strings of a JSON array as a set.
func stringSet(v any) map[string]bool {
	out := map[string]bool{}
	l, _ := v.([]any)
	for _, x := range l {
		if s, ok := x.(string); ok {
			out[s] = true
		}
	}
	return out
}

// typeSet returns the types "type" allows as a set; nil when the keyword is
// absent, which allows every type.
func typeSet(v any, present bool) map[string]bool {
	if !present {
		return nil
	}
	if s, ok := v.(string); ok {
		return map[string]bool{s: true}
	}
	return stringSet(v)
}

func typeString(types map[string]bool) string {
	if types == nil {
		return "any type"
	}
	return "[" + strings.Join(slices.Sorted(maps.Keys(types)), ", ") + "]"
}

// valueSet returns the values of a JSON array, each as its JSON text, so
// that values of any type compare exactly.
func valueSet(v any) map[string]bool {
	out := map[string]bool{}
	l, _ := v.([]any)
	for _, x := range l {
		out[jsonText(x, true)] = true
	}
	return out
}

func jsonText(v any, present bool) string {
	if !present {
		return "(absent)"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// TestDeliveryEventV1Evolution guards consumers of schema v1: the schema
// may not break them, and the baseline must record every allowed change,
// or a field added and later removed would never have been in the baseline
// and its removal would pass unnoticed.
func TestDeliveryEventV1Evolution(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(baselineFile)
	require.NoError(t, err)
	base, cur := decodeSchema(t, b), decodeSchema(t, schemas.DeliveryEventV1)

	t.Run("no breaking change", func(t *testing.T) {
		t.Parallel()
		if problems := breakingChanges(base, cur); len(problems) > 0 {
			t.Fatalf("schemas/delivery-event.v1.json breaks consumers of schema v1:\n  - %s\n\n%s\n"+
				"Revert the change, or publish it as a v2; do not copy it over the baseline.\n%s",
				strings.Join(problems, "\n  - "), evolutionRule, recordBaseline)
		}
	})
	t.Run("the baseline records the schema", func(t *testing.T) {
		t.Parallel()
		if !reflect.DeepEqual(base, cur) {
			t.Fatalf("schemas/delivery-event.v1.json differs from schemas/%s. If \"no breaking change\" passes, "+
				"the change is additive and stays v1, but it must be recorded, or a later change would be judged "+
				"against a schema consumers no longer see (a field added, then removed, would pass).\n\n%s\n%s",
				baselineFile, evolutionRule, recordBaseline)
		}
	})
}

// TestBreakingChangesVerdicts holds the guard itself to the rule: each
// breaking change applied to the baseline must be reported, and each
// additive one must pass.
func TestBreakingChangesVerdicts(t *testing.T) {
	t.Parallel()
	baseline, err := os.ReadFile(baselineFile)
	require.NoError(t, err)

	// Helpers to reach into a decoded schema.
	props := func(s map[string]any, path ...string) map[string]any {
		for _, p := range path {
			s = s["properties"].(map[string]any)[p].(map[string]any)
		}
		return s["properties"].(map[string]any)
	}
	prop := func(s map[string]any, path ...string) map[string]any {
		return props(s, path[:len(path)-1]...)[path[len(path)-1]].(map[string]any)
	}
	withoutRequired := func(s map[string]any, name string) {
		s["required"] = slices.DeleteFunc(s["required"].([]any), func(v any) bool { return v == name })
	}
	// listSchema adds, to base and cur alike, an array of objects and a
	// definition, which the schema does not use yet, so that the guard's
	// descent into items and $defs is tested too.
	listSchema := func(s map[string]any) {
		props(s)["parcels"] = map[string]any{
			"type": []any{"array", "null"},
			"items": map[string]any{
				"type":       "object",
				"required":   []any{"sku"},
				"properties": map[string]any{"sku": map[string]any{"type": "string"}},
			},
		}
		s["$defs"] = map[string]any{"money": map[string]any{"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"}}
	}

	tests := []struct {
		name string
		// setup changes base and cur alike before mutate changes cur.
		setup  func(s map[string]any)
		mutate func(s map[string]any)
		// want is a part of the problem reported; empty means the change
		// must pass.
		want string
	}{
		// Additive changes: they stay v1.
		{name: "no change", mutate: func(map[string]any) {}},
		{name: "an optional field added", mutate: func(s map[string]any) {
			props(s)["courier_phone"] = map[string]any{"type": []any{"string", "null"}}
		}},
		{name: "an optional field added to price", mutate: func(s map[string]any) {
			props(s, "price")["vat"] = map[string]any{"type": "string"}
		}},
		{name: "a new event_type", mutate: func(s map[string]any) {
			e := prop(s, "event_type")
			e["enum"] = append(e["enum"].([]any), "delivery.eta_changed")
		}},
		// A new canonical status is additive (docs/events.md): consumers
		// treat a status they do not know as "unknown".
		{name: "a canonical status added", mutate: func(s map[string]any) {
			st := prop(s, "status")
			st["enum"] = append(st["enum"].([]any), "lost")
		}},
		{name: "a new provider", mutate: func(s map[string]any) {
			e := prop(s, "provider")
			e["enum"] = append(e["enum"].([]any), "cdek")
		}},
		{name: "descriptions reworded", mutate: func(s map[string]any) {
			s["description"] = "reworded"
			prop(s, "status")["description"] = "reworded"
		}},
		{name: "an optional field added to array items", setup: listSchema, mutate: func(s map[string]any) {
			prop(s, "parcels")["items"].(map[string]any)["properties"].(map[string]any)["weight"] = map[string]any{"type": "number"}
		}},
		{name: "a definition added", setup: listSchema, mutate: func(s map[string]any) {
			s["$defs"].(map[string]any)["currency"] = map[string]any{"type": "string"}
		}},

		// Breaking changes: each is a v2.
		{name: "a field removed", mutate: func(s map[string]any) {
			delete(props(s), "point_id")
			withoutRequired(s, "point_id")
		}, want: `/properties/point_id: field "point_id" removed or renamed`},
		{name: "a field renamed", mutate: func(s map[string]any) {
			props(s)["route_point_id"] = props(s)["point_id"]
			delete(props(s), "point_id")
			withoutRequired(s, "point_id")
			s["required"] = append(s["required"].([]any), "route_point_id")
		}, want: `field "point_id" removed or renamed`},
		{name: "a type narrowed", mutate: func(s map[string]any) {
			prop(s, "provider_status")["type"] = "string"
		}, want: "/properties/provider_status: type changed from [null, string] to [string]"},
		{name: "a field made nullable", mutate: func(s map[string]any) {
			prop(s, "revision")["type"] = []any{"integer", "null"}
		}, want: "/properties/revision: type changed from [integer] to [integer, null]"},
		{name: "a type changed", mutate: func(s map[string]any) {
			prop(s, "revision")["type"] = "string"
		}, want: "/properties/revision: type changed"},
		{name: "a required field added", mutate: func(s map[string]any) {
			props(s)["courier_phone"] = map[string]any{"type": "string"}
			s["required"] = append(s["required"].([]any), "courier_phone")
		}, want: `"courier_phone" is newly required`},
		{name: "an optional field made required", setup: func(s map[string]any) {
			props(s)["courier_phone"] = map[string]any{"type": "string"}
		}, mutate: func(s map[string]any) {
			s["required"] = append(s["required"].([]any), "courier_phone")
		}, want: `"courier_phone" is newly required`},
		{name: "a field made optional", mutate: func(s map[string]any) {
			withoutRequired(s, "raw")
		}, want: `"raw" is no longer required`},
		{name: "a canonical status removed", mutate: func(s map[string]any) {
			st := prop(s, "status")
			st["enum"] = slices.DeleteFunc(st["enum"].([]any), func(v any) bool { return v == "expired" })
		}, want: `/properties/status: enum value "expired" removed`},
		{name: "a provider removed", mutate: func(s map[string]any) {
			p := prop(s, "provider")
			p["enum"] = slices.DeleteFunc(p["enum"].([]any), func(v any) bool { return v == "bts" })
		}, want: `enum value "bts" removed`},
		{name: "null added to an enum", mutate: func(s map[string]any) {
			e := prop(s, "event_type")
			e["enum"] = append(e["enum"].([]any), nil)
		}, want: "/properties/event_type: null added to the enum"},
		{name: "a nested field removed", mutate: func(s map[string]any) {
			delete(props(s, "price"), "currency")
		}, want: `/properties/price/properties/currency: field "currency" removed or renamed`},
		{name: "a nested type narrowed", mutate: func(s map[string]any) {
			prop(s, "price")["type"] = "object"
		}, want: "/properties/price: type changed from [null, object] to [object]"},
		{name: "a pattern changed", mutate: func(s map[string]any) {
			prop(s, "price", "amount")["pattern"] = "^[0-9]+$"
		}, want: "/properties/price/properties/amount: pattern changed"},
		{name: "a format changed", mutate: func(s map[string]any) {
			prop(s, "occurred_at")["format"] = "date"
		}, want: "/properties/occurred_at: format changed"},
		{name: "schema_version changed", mutate: func(s map[string]any) {
			prop(s, "schema_version")["const"] = json.Number("2")
		}, want: "/properties/schema_version: const changed from 1 to 2"},
		{name: "a field removed from array items", setup: listSchema, mutate: func(s map[string]any) {
			items := prop(s, "parcels")["items"].(map[string]any)
			delete(items["properties"].(map[string]any), "sku")
			items["required"] = []any{}
		}, want: `/properties/parcels/items/properties/sku: field "sku" removed or renamed`},
		{name: "a definition narrowed", setup: listSchema, mutate: func(s map[string]any) {
			s["$defs"].(map[string]any)["money"].(map[string]any)["pattern"] = "^[0-9]+$"
		}, want: "/$defs/money: pattern changed"},
		{name: "a definition removed", setup: listSchema, mutate: func(s map[string]any) {
			delete(s["$defs"].(map[string]any), "money")
		}, want: `/$defs/money: definition "money" removed or renamed`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base, cur := decodeSchema(t, baseline), decodeSchema(t, baseline)
			if tc.setup != nil {
				tc.setup(base)
				tc.setup(cur)
			}
			tc.mutate(cur)
			problems := breakingChanges(base, cur)
			if tc.want == "" {
				require.Empty(t, problems)
				return
			}
			require.NotEmpty(t, problems)
			require.Contains(t, strings.Join(problems, "\n"), tc.want)
		})
	}
}
