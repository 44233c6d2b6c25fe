// Package schemas embeds the JSON Schemas of ingestd's published payloads, so
// that tests anywhere in the module can validate what ingestd writes to Kafka
// end to end, and downstream teams can take the same file from the repository.
package schemas

import (
	"bytes"
	_ "embed"
	"fmt"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// DeliveryEventV1ID is the $id of delivery-event.v1.json.
const DeliveryEventV1ID = "https://ingestd.dev/schemas/delivery-event.v1.json"

// DeliveryEventV1 is the JSON Schema (draft 2020-12) of the delivery event
// payload, schema_version 1. Callers must not modify it.
//
//go:embed delivery-event.v1.json
var DeliveryEventV1 []byte

// CompileDeliveryEventV1 compiles DeliveryEventV1 with format assertions on,
// so that "uuid" and "date-time" are checked rather than treated as
// annotations (the 2020-12 default). Each call compiles afresh; callers that
// validate many payloads should keep the result.
func CompileDeliveryEventV1() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(DeliveryEventV1))
	if err != nil {
		return nil, fmt.Errorf("schemas: parse delivery-event.v1.json: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(DeliveryEventV1ID, doc); err != nil {
		return nil, fmt.Errorf("schemas: add delivery-event.v1.json: %w", err)
	}
	sch, err := c.Compile(DeliveryEventV1ID)
	if err != nil {
		return nil, fmt.Errorf("schemas: compile delivery-event.v1.json: %w", err)
	}
	return sch, nil
}
