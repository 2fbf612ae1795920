// Package meshtlstest makes throwaway certificates in the shape `python -m
// mesh.certs` gives them, for tests: an ECDSA P-256 CA, and service
// certificates with one spiffe://shop.local/<service> URI SAN, DNS SANs
// <service> and localhost, IP 127.0.0.1, for both TLS ends. It also
// captures slog's output for tests that check what was logged.
package meshtlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Issued is a certificate and its private key.
type Issued struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// CA is a certificate authority: an Issued that signs others.
type CA struct{ Issued }

// NewCA makes a CA valid from a minute ago for a day.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key := newKey(t)
	template := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{Organization: []string{"shopmesh test"}, CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	return &CA{sign(t, template, template, key, key)}
}

// An Option changes the certificate Issue or IssueFor makes.
type Option func(template *x509.Certificate)

// WithURIs replaces the certificate's URI SANs (by default its one SPIFFE
// ID) with uris, written exactly as given: none, several, or ones net/url
// would rewrite (an upper-case scheme), for tests of how an identity is read.
func WithURIs(uris ...string) Option {
	return func(template *x509.Certificate) {
		template.URIs = nil
		for _, uri := range uris {
			// An opaque URL is written out verbatim; a parsed one would
			// have its scheme lower-cased.
			template.URIs = append(template.URIs, &url.URL{Opaque: uri})
		}
	}
}

// Issue makes service's certificate, valid from a minute ago for an hour.
func (ca *CA) Issue(t testing.TB, service string, options ...Option) *Issued {
	t.Helper()
	return ca.IssueFor(t, service, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), options...)
}

// IssueFor makes service's certificate valid between the two times (both
// may be in the past).
func (ca *CA) IssueFor(t testing.TB, service string, notBefore, notAfter time.Time, options ...Option) *Issued {
	t.Helper()
	key := newKey(t)
	template := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{Organization: []string{"shopmesh test"}, CommonName: service},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{{Scheme: "spiffe", Host: "shop.local", Path: "/" + service}},
		DNSNames:     []string{service, "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	for _, option := range options {
		option(template)
	}
	issued := sign(t, template, ca.Cert, key, ca.Key)
	return &issued
}

// Pool is a pool holding just this CA.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// CertPEM is the certificate, PEM-encoded.
func (i *Issued) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: i.Cert.Raw})
}

// KeyPEM is the private key, PKCS#8 PEM, unencrypted.
func (i *Issued) KeyPEM(t testing.TB) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(i.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// TLS is the pair as a client presents it.
func (i *Issued) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{i.Cert.Raw}, PrivateKey: i.Key, Leaf: i.Cert}
}

// Write puts <name>.key, then <name>.pem, into dir, each replaced
// atomically as mesh.certs replaces them.
func (i *Issued) Write(t testing.TB, dir, name string) {
	t.Helper()
	WriteFile(t, filepath.Join(dir, name+".key"), i.KeyPEM(t))
	WriteFile(t, filepath.Join(dir, name+".pem"), i.CertPEM())
}

// WriteDir makes a CA and writes it (ca.pem) and a certificate for each
// service into dir, the layout MESH_CERTS_DIR names.
func WriteDir(t testing.TB, dir string, services ...string) *CA {
	t.Helper()
	ca := NewCA(t)
	WriteFile(t, filepath.Join(dir, "ca.pem"), ca.CertPEM())
	for _, service := range services {
		ca.Issue(t, service).Write(t, dir, service)
	}
	return ca
}

// WriteFile replaces path with data atomically: a temporary file beside it,
// renamed into place.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		t.Fatal(err)
	}
	_, err = tmp.Write(data)
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		t.Fatal(err)
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1)) // positive, as RFC 5280 asks
}

func sign(t testing.TB, template, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) Issued {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return Issued{Cert: cert, Key: key}
}
