// Wire-vector contract test of the Go stubs: decodes, re-encodes and parses
// ../vectors.json. Run from tests/contract/test_wire_vectors.py, or here with
// `go test ./...`.
module github.com/shopmesh/shopmesh/tests/contract/wire/go

go 1.26.0

require (
	github.com/shopmesh/shopmesh/gen/go v0.0.0-00010101000000-000000000000
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/grpc v1.85.0 // indirect
)

replace github.com/shopmesh/shopmesh/gen/go => ../../../../gen/go
