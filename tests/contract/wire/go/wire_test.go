// Package wire checks that the Go stubs agree byte for byte with the wire
// vectors in ../vectors.json, which tests/contract/wire/make_vectors.py
// writes with the Python stubs.
package wire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// The generated packages register their messages in protoregistry.GlobalTypes.
	_ "github.com/shopmesh/shopmesh/gen/go/shop/catalog/v1"
	_ "github.com/shopmesh/shopmesh/gen/go/shop/common/v1"
	_ "github.com/shopmesh/shopmesh/gen/go/shop/events/v1"
	_ "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	_ "github.com/shopmesh/shopmesh/gen/go/shop/notifications/v1"
	_ "github.com/shopmesh/shopmesh/gen/go/shop/orders/v1"
	_ "github.com/shopmesh/shopmesh/gen/go/shop/payments/v1"
)

const vectorsPath = "../vectors.json"

type vector struct {
	Name string          `json:"name"`
	Type string          `json:"type"`
	JSON json.RawMessage `json:"json"`
	Hex  string          `json:"hex"`
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	data, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatalf("read %s: %v", vectorsPath, err)
	}
	var vectors []vector
	if err := json.Unmarshal(data, &vectors); err != nil {
		t.Fatalf("parse %s: %v", vectorsPath, err)
	}
	if len(vectors) == 0 {
		t.Fatalf("%s has no vectors", vectorsPath)
	}
	return vectors
}

func newMessage(t *testing.T, fullName string) proto.Message {
	t.Helper()
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(fullName))
	if err != nil {
		t.Fatalf("message type %q: %v", fullName, err)
	}
	return mt.New().Interface()
}

func TestWireVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			want, err := hex.DecodeString(v.Hex)
			if err != nil {
				t.Fatalf("hex: %v", err)
			}

			decoded := newMessage(t, v.Type)
			if err := proto.Unmarshal(want, decoded); err != nil {
				t.Fatalf("unmarshal %s: %v", v.Type, err)
			}
			got, err := proto.MarshalOptions{Deterministic: true}.Marshal(decoded)
			if err != nil {
				t.Fatalf("marshal %s: %v", v.Type, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("re-encoded bytes differ\n got: %x\nwant: %x", got, want)
			}

			parsed := newMessage(t, v.Type)
			if err := protojson.Unmarshal(v.JSON, parsed); err != nil {
				t.Fatalf("protojson unmarshal %s: %v", v.JSON, err)
			}
			if !proto.Equal(parsed, decoded) {
				t.Errorf("JSON and bytes disagree\n from JSON: %s\nfrom bytes: %s",
					jsonString(parsed), jsonString(decoded))
			}

			// protojson's output has random whitespace: compare it as JSON values.
			printed, err := protojson.Marshal(decoded)
			if err != nil {
				t.Fatalf("protojson marshal: %v", err)
			}
			if !sameJSON(t, printed, v.JSON) {
				t.Errorf("protojson prints %s, want %s", printed, v.JSON)
			}
		})
	}
}

func jsonString(m proto.Message) string {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// sameJSON reports whether a and b hold the same JSON value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("parse %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("parse %s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}
