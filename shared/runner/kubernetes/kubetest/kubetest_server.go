package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Authorization is the API server's --authorization-mode.
type Authorization string

const (
	// AlwaysAllow lets every authenticated user do everything.
	AlwaysAllow Authorization = "AlwaysAllow"
	// RBAC enforces Roles and RoleBindings; the admin user is in
	// system:masters and still may do everything.
	RBAC Authorization = "RBAC"
)

// AdminUser and LimitedUser are the users of Server.Config and
// Server.LimitedConfig. LimitedUser is in no group but
// system:authenticated, so under RBAC it may do nothing that is not bound
// to it (or to that group).
const (
	AdminUser   = "kubetest-admin"
	LimitedUser = "kubetest-limited"
)

// Options choose what kind of server to start; servers are shared per
// distinct Options.
type Options struct {
	// Authorization defaults to AlwaysAllow.
	Authorization Authorization
}

// Server is a running etcd and kube-apiserver on 127.0.0.1.
type Server struct {
	opts       Options
	dir        string
	host       string
	caPEM      []byte
	adminToken string
	limitToken string
	kubeconfig string
	client     kubernetes.Interface
	etcd       *child
	apiserver  *child
}

// startAttempts bounds retries when a child exits during startup, which is
// almost always a port taken between choosing it and binding it (other test
// binaries and agents share the machine).
const startAttempts = 3

// New starts etcd and kube-apiserver in a new temporary directory and
// returns once /readyz answers ok. ctx bounds the startup only; the servers
// run until Stop. Most tests want the shared server of Start instead.
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.Authorization == "" {
		opts.Authorization = AlwaysAllow
	}
	bins, err := findBinaries()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		return nil, fmt.Errorf("creating server directory: %w", err)
	}
	s := &Server{opts: opts, dir: dir, adminToken: randomToken(), limitToken: randomToken()}
	if err := s.start(ctx, bins); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	return s, nil
}

func (s *Server) start(ctx context.Context, bins binaries) error {
	p, err := writePKI(s.dir)
	if err != nil {
		return err
	}
	s.caPEM = p.caPEM
	tokens := fmt.Sprintf("%s,%s,%s-uid,\"system:masters\"\n%s,%s,%s-uid\n",
		s.adminToken, AdminUser, AdminUser, s.limitToken, LimitedUser, LimitedUser)
	tokenFile := filepath.Join(s.dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(tokens), 0o600); err != nil {
		return fmt.Errorf("writing token file: %w", err)
	}

	var etcdURL string
	for attempt := 1; ; attempt++ {
		etcdURL, err = s.startEtcd(ctx, bins.etcd)
		if err == nil {
			break
		}
		if !errors.Is(err, errExited) || attempt == startAttempts {
			return err
		}
	}
	for attempt := 1; ; attempt++ {
		err = s.startAPIServer(ctx, bins.apiserver, etcdURL, p, tokenFile)
		if err == nil {
			break
		}
		if !errors.Is(err, errExited) || attempt == startAttempts {
			return err
		}
	}

	cs, err := kubernetes.NewForConfig(s.Config())
	if err != nil {
		return fmt.Errorf("creating clientset: %w", err)
	}
	s.client = cs
	s.kubeconfig = filepath.Join(s.dir, "kubeconfig")
	if err := WriteKubeconfig(s.kubeconfig, s.Config()); err != nil {
		return err
	}
	return nil
}

// errExited marks a child that ended during startup, so start retries it on
// other ports.
var errExited = errors.New("exited during startup")

func (s *Server) startEtcd(ctx context.Context, bin string) (string, error) {
	ports, err := freePorts(2)
	if err != nil {
		return "", err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	data := filepath.Join(s.dir, "etcd-data")
	if err := os.RemoveAll(data); err != nil { // a failed attempt's leftovers
		return "", fmt.Errorf("clearing etcd data: %w", err)
	}
	c, err := startChild(s.dir, "etcd", bin, []string{
		"--name=kubetest",
		"--data-dir=" + data,
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=kubetest=" + peer,
		// The data is thrown away; fsync would only make a shared disk slow.
		"--unsafe-no-fsync",
		"--log-level=warn",
	})
	if err != nil {
		return "", err
	}
	s.etcd = c
	err = waitReady(ctx, c, func(ctx context.Context) error {
		return probe(ctx, http.DefaultClient, client+"/health", "", `"health":"true"`)
	})
	if err != nil {
		return "", errors.Join(err, c.stop(time.Second))
	}
	return client, nil
}

func (s *Server) startAPIServer(ctx context.Context, bin, etcdURL string, p pki, tokenFile string) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	s.host = "https://127.0.0.1:" + strconv.Itoa(ports[0])
	c, err := startChild(s.dir, "kube-apiserver", bin, s.apiserverArgs(etcdURL, ports[0], p, tokenFile))
	if err != nil {
		return err
	}
	s.apiserver = c
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	err = waitReady(ctx, c, func(ctx context.Context) error {
		return probe(ctx, hc, s.host+"/readyz", s.adminToken, "ok")
	})
	if err != nil {
		return errors.Join(err, c.stop(time.Second))
	}
	return nil
}

// apiserverArgs are the flags of a single-node control plane without
// controllers; the comments say why a flag is not the default.
func (s *Server) apiserverArgs(etcdURL string, port int, p pki, tokenFile string) []string {
	return []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + p.certFile,
		"--tls-private-key-file=" + p.keyFile,
		"--cert-dir=" + filepath.Join(s.dir, "certs"),
		"--token-auth-file=" + tokenFile,
		"--authorization-mode=" + string(s.opts.Authorization),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saPubFile,
		"--service-account-signing-key-file=" + p.saKeyFile,
		"--service-cluster-ip-range=10.0.0.0/24",
		// No controller creates a namespace's "default" ServiceAccount, and
		// this plugin would refuse every pod without one.
		"--disable-admission-plugins=ServiceAccount",
		// The kubernetes Service's endpoint would be 127.0.0.1, which
		// Endpoints validation refuses; nothing here needs it.
		"--endpoint-reconciler-type=none",
		// Pod logs are proxied to the node's InternalIP (the fake kubelet's
		// 127.0.0.1), and with no --kubelet-certificate-authority the
		// kubelet's self-signed certificate is accepted.
		"--kubelet-preferred-address-types=InternalIP",
		// So that the runner's own checks of privileged overrides are what
		// tests see, not a cluster policy most clusters do not have.
		"--allow-privileged=true",
		"--profiling=false",
	}
}

// waitReady polls ready with backoff until it succeeds, the child exits
// (then there is no point waiting) or ctx ends. No fixed sleep: a loaded
// machine only makes it poll longer.
func waitReady(ctx context.Context, c *child, ready func(context.Context) error) error {
	delay := 20 * time.Millisecond
	var last error
	for {
		if done, err := c.exited(); done {
			return fmt.Errorf("%s %w (%v); %s", c.name, errExited, err, c.logTail())
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = ready(pctx)
		cancel()
		if last == nil {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for %s to be ready: %w (last probe: %v); %s", c.name, ctx.Err(), last, c.logTail())
		case <-c.done:
			t.Stop()
		case <-t.C:
		}
		delay = min(delay*3/2, 500*time.Millisecond)
	}
}

func probe(ctx context.Context, hc *http.Client, url, token, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, body)
	}
	return nil
}

// freePorts asks the kernel for free loopback ports. Another process may
// take one before the child binds it; start retries then.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// Stop stops kube-apiserver, then etcd, and removes the directory. It
// reports a process that would not die or left members of its process
// group behind.
func (s *Server) Stop() error {
	var errs []error
	for _, c := range []*child{s.apiserver, s.etcd} {
		if c != nil {
			errs = append(errs, c.stop(5*time.Second))
		}
	}
	s.apiserver, s.etcd = nil, nil
	if s.dir != "" {
		errs = append(errs, os.RemoveAll(s.dir))
	}
	return errors.Join(errs...)
}

// Pids returns the process ids of etcd and kube-apiserver (0 when not
// running), so that a test can check they are gone after Stop.
func (s *Server) Pids() (etcd, apiserver int) {
	if s.etcd != nil {
		etcd = s.etcd.cmd.Process.Pid
	}
	if s.apiserver != nil {
		apiserver = s.apiserver.cmd.Process.Pid
	}
	return etcd, apiserver
}

// Host is the API server's URL, https://127.0.0.1:<port>.
func (s *Server) Host() string { return s.host }

// Authorization is the server's authorization mode.
func (s *Server) Authorization() Authorization { return s.opts.Authorization }

// Config returns a new client config for the admin user (system:masters),
// which verifies the server's certificate and is not rate limited.
func (s *Server) Config() *rest.Config {
	return s.configWithToken(s.adminToken)
}

// LimitedConfig returns a new client config for LimitedUser, a user without
// groups: under RBAC it is refused everything not bound to it.
func (s *Server) LimitedConfig() *rest.Config {
	return s.configWithToken(s.limitToken)
}

func (s *Server) configWithToken(token string) *rest.Config {
	return &rest.Config{
		Host:            s.host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: append([]byte(nil), s.caPEM...)},
		// client-go's default of 5 requests/s would throttle tests.
		QPS:   -1,
		Burst: -1,
	}
}

// Kubeconfig is the path of a kubeconfig file for the admin user, for code
// that reads $KUBECONFIG. It has no namespace in its context.
func (s *Server) Kubeconfig() string { return s.kubeconfig }

// Client returns an admin clientset.
func (s *Server) Client() kubernetes.Interface { return s.client }

// Namespace creates a namespace named after the test, with a random
// suffix, so that tests sharing a server do not see each other's objects.
// It is not deleted: no controller would ever finish the deletion, and the
// server is thrown away at the end of the test binary.
func (s *Server) Namespace(t testing.TB) string {
	t.Helper()
	ns, err := s.CreateNamespace(context.Background(), t.Name())
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return ns
}

// CreateNamespace creates a namespace named prefix plus a random suffix and
// returns its name.
func (s *Server) CreateNamespace(ctx context.Context, prefix string) (string, error) {
	ns, err := s.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: namespacePrefix(prefix)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("creating namespace: %w", err)
	}
	return ns.Name, nil
}

// namespacePrefix makes a DNS-1123 label prefix of at most 40 characters
// (GenerateName adds 5) from a test name.
func namespacePrefix(name string) string {
	var b strings.Builder
	dash := true // no leading dash
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
		if b.Len() >= 39 {
			break
		}
	}
	p := strings.TrimRight(b.String(), "-")
	if p == "" {
		p = "t"
	}
	return p + "-"
}
