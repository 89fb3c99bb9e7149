package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/edgecourier/courier/agent"
	"github.com/edgecourier/courier/agent/config"
)

// scmManager drives the Windows service control manager directly.
type scmManager struct{}

func newServiceManager() (serviceManager, error) { return scmManager{}, nil }

func (scmManager) Name() string { return "the Windows service control manager" }

// recoveryActions: restart after 5s, 5s, then 60s; the count resets after a day.
var recoveryActions = []mgr.RecoveryAction{
	{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
	{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
	{Type: mgr.ServiceRestart, Delay: 60 * time.Second},
}

const recoveryResetSeconds = 86400

func (scmManager) Install(cfg *config.Config, out io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary: %w", err)
	}
	if exe, err = filepath.Abs(exe); err != nil {
		return err
	}
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("connect to the service manager (run as Administrator): %w", err)
	}
	defer m.Disconnect()
	if s, err := m.OpenService(serviceName); err == nil {
		s.Close()
		return fmt.Errorf("service %s already exists; `courier service uninstall` first", serviceName)
	}
	s, err := m.CreateService(serviceName, exe, mgr.Config{
		DisplayName:      "Courier edge agent",
		Description:      "Moves clinic files to central storage, verified, exactly once.",
		StartType:        mgr.StartAutomatic,
		DelayedAutoStart: true,
		ErrorControl:     mgr.ErrorNormal,
	}, "run", "--config", cfg.File)
	if err != nil {
		return fmt.Errorf("create service: %w", err)
	}
	defer s.Close()
	if err := s.SetRecoveryActions(recoveryActions, recoveryResetSeconds); err != nil {
		s.Delete()
		return fmt.Errorf("set recovery actions: %w", err)
	}
	// Recovery also when the agent exits with an error, not only on a crash.
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		s.Delete()
		return fmt.Errorf("set recovery on non-crash failures: %w", err)
	}
	if err := eventlog.InstallAsEventCreate(serviceName, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil &&
		!strings.Contains(err.Error(), "registry key already exists") {
		s.Delete()
		return fmt.Errorf("register the Event Log source: %w", err)
	}
	fmt.Fprintf(out, "created service %s: %s run --config %s (automatic, delayed start; restart on failure after 5s, 5s, 60s; Event Log source %s)\n",
		serviceName, exe, cfg.File, serviceName)
	return nil
}

func (scmManager) Uninstall(out io.Writer) error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("connect to the service manager (run as Administrator): %w", err)
	}
	defer m.Disconnect()
	s, err := m.OpenService(serviceName)
	if err != nil {
		return fmt.Errorf("%w: %v", errNotInstalled, err)
	}
	defer s.Close()
	if err := stopAndWait(s); err != nil {
		return err
	}
	if err := s.Delete(); err != nil {
		return fmt.Errorf("delete service: %w", err)
	}
	_ = eventlog.Remove(serviceName) // absent when the MSI installed the service
	fmt.Fprintf(out, "deleted service %s and its Event Log source; config and spool in %s stay\n",
		serviceName, filepath.Dir(config.DefaultPath()))
	return nil
}

func openService() (*mgr.Mgr, *mgr.Service, error) {
	m, err := mgr.Connect()
	if err != nil {
		return nil, nil, fmt.Errorf("connect to the service manager: %w", err)
	}
	s, err := m.OpenService(serviceName)
	if err != nil {
		m.Disconnect()
		return nil, nil, fmt.Errorf("%w: %v", errNotInstalled, err)
	}
	return m, s, nil
}

func (scmManager) Start() error {
	m, s, err := openService()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	return s.Start()
}

func (scmManager) Stop() error {
	m, s, err := openService()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	return stopAndWait(s)
}

// stopAndWait asks the service to stop and waits (at most 60s) until it has.
func stopAndWait(s *mgr.Service) error {
	st, err := s.Query()
	if err != nil {
		return fmt.Errorf("query service: %w", err)
	}
	if st.State == svc.Stopped {
		return nil
	}
	if st.State != svc.StopPending {
		if st, err = s.Control(svc.Stop); err != nil {
			return fmt.Errorf("stop service: %w", err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for st.State != svc.Stopped {
		if time.Now().After(deadline) {
			return fmt.Errorf("service %s did not stop within 60s (state %d)", serviceName, st.State)
		}
		time.Sleep(300 * time.Millisecond)
		if st, err = s.Query(); err != nil {
			return fmt.Errorf("query service: %w", err)
		}
	}
	return nil
}

func (scmManager) Status() (string, error) {
	m, s, err := openService()
	if errors.Is(err, errNotInstalled) {
		return "not installed", nil
	}
	if err != nil {
		return "", err
	}
	defer m.Disconnect()
	defer s.Close()
	st, err := s.Query()
	if err != nil {
		return "", fmt.Errorf("query service: %w", err)
	}
	if st.State == svc.Running || st.State == svc.StartPending || st.State == svc.ContinuePending {
		return "running", nil
	}
	return "stopped", nil
}

// isInteractive is false when the SCM started this process as a service.
func isInteractive() bool {
	isSvc, err := svc.IsWindowsService()
	return err != nil || !isSvc
}

// runAsService runs the same agent as `courier run` under the SCM; the log
// goes to the Windows Event Log (source "courier") as well as stderr.
func runAsService(cfg *config.Config, stderr io.Writer) int {
	w := stderr
	if el, err := eventlog.Open(serviceName); err == nil {
		defer el.Close()
		w = io.MultiWriter(stderr, &eventLogWriter{log: el})
	}
	h := &svcHandler{cfg: cfg, out: w}
	if err := svc.Run(serviceName, h); err != nil {
		return fail(w, "service: %v", err)
	}
	return h.code
}

type svcHandler struct {
	cfg  *config.Config
	out  io.Writer
	code int
}

func (h *svcHandler) Execute(_ []string, req <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- runAgent(ctx, h.cfg, agent.Options{}, h.out) }()
	status <- svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
	for {
		select {
		case code := <-done:
			// The agent ended on its own (spool locked, disk gone): report a
			// failure so the SCM's recovery actions restart the service.
			h.code = max(code, 1)
			return true, uint32(h.code)
		case c := <-req:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				status <- svc.Status{State: svc.StopPending, WaitHint: 30000}
				cancel()
				h.code = <-done
				if h.code != 0 {
					return true, uint32(h.code)
				}
				return false, 0
			}
		}
	}
}

// eventLogWriter sends each log line to the Event Log at its level.
type eventLogWriter struct {
	mu  sync.Mutex
	log *eventlog.Log
}

func (w *eventLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		s := string(line)
		switch {
		case strings.Contains(s, `"level":"ERROR"`), strings.Contains(s, "level=ERROR"), strings.HasPrefix(s, "courier:"):
			_ = w.log.Error(1, s)
		case strings.Contains(s, `"level":"WARN"`), strings.Contains(s, "level=WARN"):
			_ = w.log.Warning(1, s)
		default:
			_ = w.log.Info(1, s)
		}
	}
	return len(p), nil
}
