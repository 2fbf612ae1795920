package meshtls_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls"
	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls/meshtlstest"
)

// echo serves TLS with the reloader's configuration on 127.0.0.1 and echoes
// what each connection sends.
func echo(t *testing.T, reloader *meshtls.Reloader) string {
	t.Helper()
	listener, err := tls.Listen("tcp", "127.0.0.1:0", reloader.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = listener.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				_, _ = io.Copy(conn, conn)
			})
		}
	})
	return listener.Addr().String()
}

// roundTrip connects presenting client, checks one echo, and returns the
// serial of the certificate the server presented.
func roundTrip(t *testing.T, addr string, roots *x509.CertPool, client *meshtlstest.Issued) (*big.Int, error) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
		RootCAs:      roots,
		ServerName:   "inventory",
		Certificates: []tls.Certificate{client.TLS()},
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// In TLS 1.3 the server checks the client's certificate after the
	// client's handshake is done: the first read tells.
	if _, err := conn.Write([]byte("ping")); err != nil {
		return nil, err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return nil, err
	}
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// rotating is an echo server whose reloader reads inventory's certificate
// from dir, and a client certificate for orders from the same CA.
type rotating struct {
	logs   *meshtlstest.LogBuffer
	dir    string
	ca     *meshtlstest.CA
	orders *meshtlstest.Issued
	first  *big.Int // the serial of the certificate the server started with
	addr   string
}

func serveRotating(t *testing.T) *rotating {
	t.Helper()
	r := &rotating{logs: meshtlstest.CaptureLogs(t), dir: t.TempDir()}
	r.ca = meshtlstest.WriteDir(t, r.dir, "inventory")
	r.orders = r.ca.Issue(t, "orders")
	reloader, err := meshtls.NewReloader(r.dir, "inventory")
	if err != nil {
		t.Fatal(err)
	}
	r.first = reloader.Certificate().SerialNumber
	r.addr = echo(t, reloader)
	return r
}

func TestNewReloaderNamesWhatIsWrong(t *testing.T) {
	dir := t.TempDir()
	if _, err := meshtls.NewReloader(dir, "inventory"); err == nil ||
		!strings.Contains(err.Error(), meshtls.CAFile(dir)) {
		t.Errorf("empty folder: %v", err)
	}
	ca := meshtlstest.WriteDir(t, dir, "inventory")
	if _, err := meshtls.NewReloader(dir, "inventory"); err != nil {
		t.Fatalf("good folder: %v", err)
	}
	// Another certificate's key: not a pair, however often it is read.
	meshtlstest.WriteFile(t, meshtls.KeyFile(dir, "inventory"), ca.Issue(t, "inventory").KeyPEM(t))
	_, err := meshtls.NewReloader(dir, "inventory")
	if err == nil || !strings.Contains(err.Error(), "private key does not match public key") ||
		!strings.Contains(err.Error(), meshtls.CertFile(dir, "inventory")) {
		t.Errorf("mismatched pair: %v", err)
	}
	meshtlstest.WriteFile(t, meshtls.CAFile(dir), []byte("not PEM"))
	ca.Issue(t, "inventory").Write(t, dir, "inventory")
	if _, err := meshtls.NewReloader(dir, "inventory"); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("bad CA: %v", err)
	}
}

func TestTheServerRequiresACertificateOfItsCA(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	dir := t.TempDir()
	ca := meshtlstest.WriteDir(t, dir, "inventory")
	reloader, err := meshtls.NewReloader(dir, "inventory")
	if err != nil {
		t.Fatal(err)
	}
	addr := echo(t, reloader)
	if _, err := roundTrip(t, addr, ca.Pool(), ca.Issue(t, "orders")); err != nil {
		t.Errorf("orders refused: %v", err)
	}
	rogue := meshtlstest.NewCA(t).Issue(t, "orders")
	if _, err := roundTrip(t, addr, ca.Pool(), rogue); err == nil {
		t.Error("a rogue CA's certificate was accepted")
	}
	expired := ca.IssueFor(t, "orders", time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	if _, err := roundTrip(t, addr, ca.Pool(), expired); err == nil {
		t.Error("an expired certificate was accepted")
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "inventory"})
	if err == nil {
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err = conn.Write([]byte("ping")); err == nil {
			_, err = io.ReadFull(conn, make([]byte, 4))
		}
	}
	if err == nil {
		t.Error("a client without a certificate was accepted")
	}
}

func TestANewConnectionSeesTheRotatedCertificate(t *testing.T) {
	r := serveRotating(t)
	if got, err := roundTrip(t, r.addr, r.ca.Pool(), r.orders); err != nil || got.Cmp(r.first) != 0 {
		t.Fatalf("before: serial %v, %v; want %v", got, err, r.first)
	}

	next := r.ca.Issue(t, "inventory")
	next.Write(t, r.dir, "inventory")
	got, err := roundTrip(t, r.addr, r.ca.Pool(), r.orders)
	if err != nil || got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("after: serial %v, %v; want %v", got, err, next.Cert.SerialNumber)
	}
	if !strings.Contains(r.logs.String(), `"msg":"loaded a new certificate for inventory"`) {
		t.Errorf("no reload logged:\n%s", r.logs)
	}

	// A new CA (and a certificate under it) is read too: the old CA's
	// clients are refused from then on, the new CA's accepted.
	newCA := meshtlstest.NewCA(t)
	newCA.Issue(t, "inventory").Write(t, r.dir, "inventory")
	meshtlstest.WriteFile(t, meshtls.CAFile(r.dir), newCA.CertPEM())
	if _, err := roundTrip(t, r.addr, newCA.Pool(), newCA.Issue(t, "orders")); err != nil {
		t.Errorf("the new CA's client refused: %v", err)
	}
	if _, err := roundTrip(t, r.addr, newCA.Pool(), r.orders); err == nil {
		t.Error("the old CA's client still accepted")
	}
}

func TestAHalfRotatedPairKeepsTheCurrentCertificate(t *testing.T) {
	r := serveRotating(t)

	// The writer has replaced the key and not (yet) the certificate.
	next := r.ca.Issue(t, "inventory")
	meshtlstest.WriteFile(t, meshtls.KeyFile(r.dir, "inventory"), next.KeyPEM(t))
	if got, err := roundTrip(t, r.addr, r.ca.Pool(), r.orders); err != nil || got.Cmp(r.first) != 0 {
		t.Fatalf("half rotated: serial %v, %v; want the old %v", got, err, r.first)
	}
	if !strings.Contains(r.logs.String(), `"msg":"keeping the current certificate of inventory: `) {
		t.Errorf("no warning logged:\n%s", r.logs)
	}
	// Garbage instead of a certificate: the same.
	meshtlstest.WriteFile(t, meshtls.CertFile(r.dir, "inventory"), []byte("garbage"))
	if got, err := roundTrip(t, r.addr, r.ca.Pool(), r.orders); err != nil || got.Cmp(r.first) != 0 {
		t.Fatalf("garbage: serial %v, %v; want the old %v", got, err, r.first)
	}
	// The certificate arrives: the next connection has it.
	meshtlstest.WriteFile(t, meshtls.CertFile(r.dir, "inventory"), next.CertPEM())
	if got, err := roundTrip(t, r.addr, r.ca.Pool(), r.orders); err != nil || got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("completed: serial %v, %v; want %v", got, err, next.Cert.SerialNumber)
	}
}

func TestAPairCompletedWhileReadingIsReadAgain(t *testing.T) {
	logs := meshtlstest.CaptureLogs(t)
	dir := t.TempDir()
	ca := meshtlstest.WriteDir(t, dir, "inventory")
	reloader, err := meshtls.NewReloader(dir, "inventory")
	if err != nil {
		t.Fatal(err)
	}
	next := ca.Issue(t, "inventory")
	meshtlstest.WriteFile(t, meshtls.KeyFile(dir, "inventory"), next.KeyPEM(t))
	// The certificate is staged beside its place, and renamed into it while
	// the reloader reads: well inside its 4 x 20 ms of second chances.
	staged := filepath.Join(dir, ".inventory.pem.staged")
	meshtlstest.WriteFile(t, staged, next.CertPEM())
	renamed := make(chan error, 1)
	go func() {
		time.Sleep(5 * time.Millisecond)
		renamed <- os.Rename(staged, meshtls.CertFile(dir, "inventory"))
	}()
	got := reloader.Certificate().SerialNumber
	if err := <-renamed; err != nil {
		t.Fatal(err)
	}
	if got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Errorf("serial %v, want the new %v", got, next.Cert.SerialNumber)
	}
	if strings.Contains(logs.String(), "keeping") {
		t.Errorf("warned:\n%s", logs)
	}
}

func TestFiles(t *testing.T) {
	got := strings.Join(meshtls.Files("/certs", "inventory"), " ")
	if got != "/certs/ca.pem /certs/inventory.pem /certs/inventory.key" {
		t.Errorf("got %s", got)
	}
}
