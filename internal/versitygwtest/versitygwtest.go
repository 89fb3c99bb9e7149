// Package versitygwtest starts a real S3-compatible server (versitygw with
// its posix backend on a temporary directory) on a loopback port for tests.
//
// Install the server with
//
//	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
//
// Without it tests skip, except under CI (env CI set), where a missing
// server is a failure.
package versitygwtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Server is a running versitygw with one empty bucket.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	Bucket    string
	Region    string
	AccessKey string
	SecretKey string
	// Dir is the posix backend's root; the bucket is Dir/Bucket.
	Dir string
}

// Env returns the AWS environment variables a child process (or the AWS
// default credential chain in this process, via t.Setenv) needs.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// StoreURL is the courier-ingest --store value for this server.
func (s *Server) StoreURL() string {
	return fmt.Sprintf("s3://%s?endpoint=%s&region=%s", s.Bucket, s.Endpoint, s.Region)
}

// Client returns an S3 client for checking what landed in the bucket.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
}

// Binary finds versitygw on PATH or in $GOPATH/bin, "" if absent.
func Binary() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Start runs versitygw for the rest of the test and creates a bucket.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("versitygw not found (CI): go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
		}
		t.Skip("versitygw not installed: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	}
	s := &Server{
		Bucket:    "courier-test",
		Region:    "us-east-1",
		AccessKey: "courier-test-access",
		SecretKey: "courier-test-secret-key-0123456789",
		Dir:       t.TempDir(),
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			t.Fatalf("versitygw: free port: %v", err)
		}
		stop, err := run(t, bin, s, addr)
		if err == nil {
			t.Cleanup(stop)
			s.Endpoint = "http://" + addr
			break
		}
		lastErr = err
	}
	if s.Endpoint == "" {
		t.Fatalf("versitygw did not start: %v", lastErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.Bucket)}); err != nil {
		t.Fatalf("versitygw: create bucket: %v", err)
	}
	return s
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// syncBuffer keeps versitygw's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() < 64<<10 {
		b.b.Write(p)
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func run(t testing.TB, bin string, s *Server, addr string) (stop func(), err error) {
	cmd := exec.Command(bin,
		"--access", s.AccessKey, "--secret", s.SecretKey, "--region", s.Region,
		"--port", addr, "--quiet",
		"posix", s.Dir)
	var out syncBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			return nil, fmt.Errorf("versitygw exited: %v\n%s", err, out.String())
		default:
		}
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			// Another server may have taken the port between freeAddr and
			// the start: only versitygw itself counts.
			if resp.Header.Get("Server") == "VERSITYGW" {
				return stop, nil
			}
			err = fmt.Errorf("port answered by %q, not versitygw", resp.Header.Get("Server"))
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("versitygw not answering on %s after 30s: %v\n%s", addr, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
