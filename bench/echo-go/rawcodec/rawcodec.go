// Package rawcodec is a gRPC codec that passes messages through as the bytes
// they are on the wire, for the Go anchors of the benchmarks: a message is
// never decoded, so they cost what grpc-go itself costs per call.
package rawcodec

import "fmt"

// Codec marshals and unmarshals *[]byte only.
type Codec struct{}

// Marshal returns the bytes *v holds.
func (Codec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return *b, nil
}

// Unmarshal copies data into *v.
func (Codec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	// gRPC may reuse data's buffer once Unmarshal returns.
	*b = append((*b)[:0], data...)
	return nil
}

// Name is the codec's content-subtype.
func (Codec) Name() string { return "raw" }
