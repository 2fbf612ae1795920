// Package meshtls is the inventory's end of the mesh's mutual TLS, as
// mesh/tls.py is the Python services': server credentials that require a
// client certificate from the shop's CA, and that pick up a rotated
// certificate (or CA) without a restart.
//
// The certificates folder (MESH_CERTS_DIR) is what `python -m mesh.certs`
// (`make certs`) writes: ca.pem, and <service>.pem with <service>.key (PEM,
// PKCS#8 ECDSA P-256). Its writer replaces each file atomically, the key
// first and then the certificate, so a reader may see a new key beside the
// old certificate for a moment: it reads the pair again a few times, and
// otherwise keeps what it has.
package meshtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// A half-replaced pair is read again this often, this far apart (mesh/tls.py
// _PAIR_ATTEMPTS, _PAIR_PAUSE_S): the writer's gap between its two renames
// is far shorter.
const (
	pairAttempts = 5
	pairPause    = 20 * time.Millisecond
)

// CAFile is the shop's CA certificate in the certificates folder dir.
func CAFile(dir string) string { return filepath.Join(dir, "ca.pem") }

// CertFile is service's certificate in dir.
func CertFile(dir, service string) string { return filepath.Join(dir, service+".pem") }

// KeyFile is service's private key in dir.
func KeyFile(dir, service string) string { return filepath.Join(dir, service+".key") }

// Files are the three files a server of service reads, CA first.
func Files(dir, service string) []string {
	return []string{CAFile(dir), CertFile(dir, service), KeyFile(dir, service)}
}

// stamp is what a changed file shows without reading it: inode (a rename
// gives a new one), size and modification time.
type stamp struct {
	inode uint64
	size  int64
	mtime int64
}

// Reloader keeps a server's TLS configuration current with its files. Its
// TLSConfig hands each new handshake the configuration as of that moment;
// connections already open keep the one they started with.
type Reloader struct {
	dir, service string

	// mu serialises the check and any reload: a rotation is read once, by
	// one handshake, while the others wait the few milliseconds it takes.
	mu     sync.Mutex
	seen   [3]stamp // of Files, when config was read
	config *tls.Config
}

// NewReloader reads service's certificate, key and the CA from dir; the
// error says which file is missing or unusable.
func NewReloader(dir, service string) (*Reloader, error) {
	r := &Reloader{dir: dir, service: service}
	seen, err := r.stamps()
	if err != nil {
		return nil, err
	}
	if r.config, err = r.load(); err != nil {
		return nil, err
	}
	r.seen = seen
	return r, nil
}

// TLSConfig is the server side of the mesh's mTLS, for credentials.NewTLS.
// Every handshake goes through GetConfigForClient, which checks the files
// first (three stats) and reloads them when one changed.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return r.current(), nil },
	}
}

// Certificate is the service certificate a new handshake presents, the files
// checked first as a handshake checks them.
func (r *Reloader) Certificate() *x509.Certificate {
	return r.current().Certificates[0].Leaf
}

// current reloads the configuration if the files changed, and returns it.
// It never fails: a handshake must not fail because a rotation is under way,
// so a pair that cannot be read keeps the configuration in use, with a
// warning, and is tried again at the next handshake.
func (r *Reloader) current() *tls.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen, err := r.stamps()
	if err == nil && seen == r.seen {
		return r.config
	}
	var config *tls.Config
	if err == nil {
		config, err = r.load()
	}
	if err != nil {
		// The message names the service: the logger already has a
		// "service" field, the process's own.
		slog.Warn(fmt.Sprintf("keeping the current certificate of %s: %v", r.service, err),
			"error", err.Error())
		return r.config
	}
	// The stamps were taken before reading: a change since then is seen
	// (and read) at the next handshake.
	r.seen, r.config = seen, config
	leaf := config.Certificates[0].Leaf
	slog.Info("loaded a new certificate for "+r.service,
		"serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	return config
}

func (r *Reloader) stamps() ([3]stamp, error) {
	var stamps [3]stamp
	for i, path := range Files(r.dir, r.service) {
		info, err := os.Stat(path)
		if err != nil {
			return stamps, err
		}
		stamps[i] = stamp{size: info.Size(), mtime: info.ModTime().UnixNano()}
		if sys, ok := info.Sys().(*syscall.Stat_t); ok {
			stamps[i].inode = uint64(sys.Ino) // not a uint64 on every platform
		}
	}
	return stamps, nil
}

// load reads the files into the configuration of one handshake.
func (r *Reloader) load() (*tls.Config, error) {
	pair, err := readPair(CertFile(r.dir, r.service), KeyFile(r.dir, r.service))
	if err != nil {
		return nil, err
	}
	roots, err := readCA(r.dir)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		// No certificate, another CA's or an expired one: refused in the
		// handshake, before any call.
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  roots,
		MinVersion: tls.VersionTLS12, // 1.3 whenever the client has it
		// A resumed session skips the certificates: every connection
		// shows the current one and has the client's checked against the
		// current CA. gRPC connections are long-lived, so this costs little.
		SessionTicketsDisabled: true,
	}, nil
}

// ClientConfig is the client end, for one connection: service's own
// certificate, and a server that must show the shop's CA and server's name
// (a DNS SAN of its certificate). The health probe uses it, once.
func ClientConfig(dir, service, server string) (*tls.Config, error) {
	pair, err := readPair(CertFile(dir, service), KeyFile(dir, service))
	if err != nil {
		return nil, err
	}
	roots, err := readCA(dir)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		RootCAs:      roots,
		ServerName:   server,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// readCA reads the shop's CA certificate of dir.
func readCA(dir string) (*x509.CertPool, error) {
	caPEM, err := os.ReadFile(CAFile(dir))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", CAFile(dir))
	}
	return roots, nil
}

// readPair reads key and certificate until they belong together.
func readPair(certFile, keyFile string) (tls.Certificate, error) {
	var problem error
	for attempt := range pairAttempts {
		if attempt > 0 {
			time.Sleep(pairPause)
		}
		// The key first, as the writer writes it first: a key read before
		// a certificate is never newer than it.
		keyPEM, keyErr := os.ReadFile(keyFile)
		certPEM, certErr := os.ReadFile(certFile)
		if problem = errors.Join(keyErr, certErr); problem != nil {
			continue
		}
		// X509KeyPair also checks that the key is the certificate's.
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err == nil {
			return pair, nil
		}
		problem = fmt.Errorf("%s and %s: %w", certFile, keyFile, err)
	}
	return tls.Certificate{}, problem
}
