package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// ErrNotConnected is returned by publishes attempted while the broker link is down.
// The caller keeps the data and tries again later.
var ErrNotConnected = errors.New("mqtt: not connected to broker")

// TLSOptions name the files for an ssl:// broker (mqtt.tls in the config).
type TLSOptions struct {
	CAFile     string // PEM bundle to verify the broker; "" = system roots
	ClientCert string // PEM client certificate; requires ClientKey
	ClientKey  string
}

// Options configure the agent's one connection to its broker (the config's mqtt section).
type Options struct {
	Broker       string // tcp://host:port or ssl://host:port
	ClientID     string // "" = courier-<AgentID>
	Username     string
	PasswordFile string // read once at New, trailing newline trimmed
	TLS          TLSOptions
	AgentID      string // names the courier/<agent-id>/… topics
	Logger       *slog.Logger
	// Transient is for short-lived helpers such as `courier events replay`: a clean
	// session and no last will, so they neither leave a session at the broker nor
	// mark the running agent offline when they end.
	Transient bool

	// Tuning; zero values pick the defaults in brackets.
	KeepAlive            time.Duration // [30s]
	ConnectTimeout       time.Duration // [10s] one TCP+CONNECT attempt
	MaxReconnectInterval time.Duration // [30s] backoff ceiling between attempts
	PublishTimeout       time.Duration // [30s] how long a QoS 1 publish may wait for PUBACK
}

func (o *Options) withDefaults() {
	if o.ClientID == "" {
		o.ClientID = "courier-" + o.AgentID
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.MaxReconnectInterval <= 0 {
		o.MaxReconnectInterval = 30 * time.Second
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = 30 * time.Second
	}
}

// EventsTopic is where the agent publishes its events.
func EventsTopic(agentID string) string { return "courier/" + agentID + "/events" }

// StatusTopic is where the agent publishes its retained status (and its last will).
func StatusTopic(agentID string) string { return "courier/" + agentID + "/status" }

// Offline is the last will and the status left behind on a clean shutdown: which
// agent, and when (for the will: when the connection that carries it was set up,
// the last moment the agent is known to have been alive).
type Offline struct {
	State string    `json:"state"` // always "offline"
	Agent string    `json:"agent"`
	At    time.Time `json:"at"`
}

func offlinePayload(agent string, at time.Time) []byte {
	b, _ := json.Marshal(Offline{State: "offline", Agent: agent, At: at.UTC().Truncate(time.Second)})
	return b
}

// Conn owns the agent's single paho client: persistent session, manual acks,
// automatic reconnect. Feeds, the event sink and the status publisher all ride on it.
//
// Register feeds (NewFeed) and hooks (OnConnect) before Start: a persistent session
// delivers queued messages right after CONNACK, before any SUBSCRIBE is sent, so the
// routes must already exist or paho would leave those messages unacknowledged.
type Conn struct {
	opts   Options
	log    *slog.Logger
	client paho.Client

	// gen counts link changes (lost, reconnecting, connected). A publish token is only
	// trusted if gen did not move between Publish and the token's completion: paho
	// completes the tokens of in-flight messages without error when it resends them
	// from its store after a reconnect, with no PUBACK ever seen for them.
	gen       atomic.Uint64
	connected atomic.Bool
	store     *resumeCountingStore

	mu        sync.Mutex
	hooks     []func(ctx context.Context)
	unrouted  Receiver // where messages no feed routes are recorded as rejected
	lastErr   error
	lastState string // for logging once per state change
	started   bool
	closing   bool
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // paho callbacks and our goroutines
	connectCh chan struct{}  // closed-and-replaced on each connect (WaitConnected)
}

// New validates opts, reads the password file and the TLS files, and builds the client.
// Nothing is dialled until Start.
func New(opts Options) (*Conn, error) {
	opts.withDefaults()
	if opts.AgentID == "" || strings.ContainsAny(opts.AgentID, "/+#") {
		return nil, fmt.Errorf("mqtt: agent id %q: must be non-empty and must not contain '/', '+' or '#'", opts.AgentID)
	}
	u, err := url.Parse(opts.Broker)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("mqtt.broker: must be tcp://host:port or ssl://host:port, got %q", opts.Broker)
	}
	po := paho.NewClientOptions()
	switch u.Scheme {
	case "tcp", "mqtt":
	case "ssl", "tls", "mqtts":
		tc, err := tlsConfig(opts.TLS)
		if err != nil {
			return nil, err
		}
		po.SetTLSConfig(tc)
	default:
		return nil, fmt.Errorf("mqtt.broker: scheme must be tcp or ssl, got %q", u.Scheme)
	}
	po.AddBroker(opts.Broker)
	if opts.Username != "" {
		po.SetUsername(opts.Username)
	}
	if opts.PasswordFile != "" {
		b, err := os.ReadFile(opts.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.password_file: %w", err)
		}
		po.SetPassword(strings.TrimRight(string(b), "\r\n"))
	}

	c := &Conn{opts: opts, log: opts.Logger.With("broker", redactURL(u)), connectCh: make(chan struct{})}
	c.store = &resumeCountingStore{Store: paho.NewMemoryStore()}
	po.SetStore(c.store)
	po.SetClientID(opts.ClientID)
	po.SetCleanSession(opts.Transient)
	po.SetResumeSubs(true)
	po.SetOrderMatters(false)
	po.SetAutoAckDisabled(true)
	po.SetAutoReconnect(true)
	po.SetConnectRetry(false) // Start runs the first-connect loop itself, cancellable by ctx
	po.SetMaxReconnectInterval(opts.MaxReconnectInterval)
	po.SetKeepAlive(opts.KeepAlive)
	po.SetPingTimeout(opts.KeepAlive / 2)
	po.SetConnectTimeout(opts.ConnectTimeout)
	po.SetWriteTimeout(opts.PublishTimeout)
	if !opts.Transient {
		po.SetBinaryWill(StatusTopic(opts.AgentID), offlinePayload(opts.AgentID, time.Now()), 1, true)
	}
	po.SetDefaultPublishHandler(c.onUnrouted)
	po.SetOnConnectHandler(c.onConnect)
	po.SetConnectionLostHandler(c.onLost)
	po.SetReconnectingHandler(c.onReconnecting)
	po.SetConnectionNotificationHandler(c.onNotification)
	c.client = paho.NewClient(po)
	return c, nil
}

// redactURL drops any user info from the broker URL before it is logged.
func redactURL(u *url.URL) string {
	v := *u
	v.User = nil
	return v.String()
}

func tlsConfig(o TLSOptions) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt.tls.ca_file %s: no PEM certificates found", o.CAFile)
		}
		tc.RootCAs = pool
	}
	if (o.ClientCert == "") != (o.ClientKey == "") {
		return nil, errors.New("mqtt.tls: client_cert and client_key must be set together")
	}
	if o.ClientCert != "" {
		cert, err := tls.LoadX509KeyPair(o.ClientCert, o.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.client_cert/client_key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// AgentID is the id in this connection's topics.
func (c *Conn) AgentID() string { return c.opts.AgentID }

// OnConnect registers f to run after every successful (re)connect, in its own
// goroutine owned by the Conn, with a context cancelled by Close.
// It must be called before Start.
func (c *Conn) OnConnect(f func(ctx context.Context)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		panic("mqtt: OnConnect after Start")
	}
	c.hooks = append(c.hooks, f)
}

// Start begins connecting in the background and returns at once: a broker that is
// down or refuses us is retried with backoff until Close (logged once per change).
// ctx bounds the whole connection's life as Close does.
func (c *Conn) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return errors.New("mqtt: Start called twice")
	}
	c.started = true
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.firstConnect(c.ctx)
	}()
	return nil
}

// firstConnect retries the initial CONNECT; once it succeeded paho's AutoReconnect
// takes over for the rest of the process's life.
func (c *Conn) firstConnect(ctx context.Context) {
	wait := time.Second
	for {
		tok := c.client.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return
		}
		if tok.Error() == nil {
			return
		}
		// onNotification already logged the reason (once per change).
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		wait = min(wait*2, c.opts.MaxReconnectInterval)
	}
}

// Close stops the connection: feed handlers are told to stop (messages they hold stay
// unacknowledged with the broker), every goroutine is waited for, then the client
// disconnects cleanly (so the broker does not publish the last will).
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	started := c.started
	c.mu.Unlock()
	if !started {
		return nil
	}
	c.cancel()
	c.wg.Wait()
	c.client.Disconnect(250)
	c.connected.Store(false)
	return nil
}

// spawn runs f in a goroutine owned by the Conn, unless Close has begun.
func (c *Conn) spawn(f func(ctx context.Context)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || !c.started {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f(c.ctx)
	}()
	return true
}

// run runs f on the calling goroutine (a paho callback) while counting it as owned,
// so Close waits for it. It reports false, without calling f, once Close has begun.
func (c *Conn) run(f func(ctx context.Context)) bool {
	c.mu.Lock()
	if c.closing || !c.started {
		c.mu.Unlock()
		return false
	}
	c.wg.Add(1)
	ctx := c.ctx
	c.mu.Unlock()
	defer c.wg.Done()
	f(ctx)
	return true
}

// Connected reports whether the link to the broker is up now.
func (c *Conn) Connected() bool { return c.connected.Load() && c.client.IsConnectionOpen() }

// LastError is the most recent connection failure, nil once connected again.
func (c *Conn) LastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// WaitConnected blocks until the link is up or ctx ends.
func (c *Conn) WaitConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		ch := c.connectCh
		c.mu.Unlock()
		if c.Connected() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("mqtt %s: wait for connection: %w", c.opts.AgentID, ctx.Err())
		}
	}
}

func (c *Conn) onConnect(paho.Client) {
	c.gen.Add(1)
	c.connected.Store(true)
	c.mu.Lock()
	c.lastErr = nil
	changed := c.lastState != "connected"
	c.lastState = "connected"
	close(c.connectCh)
	c.connectCh = make(chan struct{})
	hooks := c.hooks
	c.mu.Unlock()
	if changed {
		c.log.Info("mqtt connected", "client_id", c.opts.ClientID)
	}
	for _, h := range hooks {
		c.spawn(h)
	}
}

func (c *Conn) onLost(_ paho.Client, err error) {
	c.gen.Add(1)
	c.connected.Store(false)
	c.setState("lost", err)
}

func (c *Conn) onReconnecting(paho.Client, *paho.ClientOptions) {
	// Runs synchronously before paho resends its stored messages, so any publish
	// token paho completes during that resend is seen with a newer generation.
	c.gen.Add(1)
	c.connected.Store(false)
}

func (c *Conn) onNotification(_ paho.Client, n paho.ConnectionNotification) {
	if f, ok := n.(paho.ConnectionNotificationFailed); ok {
		c.setState("failed", f.Reason)
	}
}

// setState records err and logs it when the kind of failure changed, so a broker that
// refuses us for hours logs one line, not one per retry.
func (c *Conn) setState(state string, err error) {
	if err == nil {
		err = errors.New("connection closed")
	}
	key := state + ": " + err.Error()
	c.mu.Lock()
	c.lastErr = err
	changed := c.lastState != key
	c.lastState = key
	c.mu.Unlock()
	if !changed {
		return
	}
	switch {
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword), errors.Is(err, packets.ErrorRefusedNotAuthorised):
		c.log.Error("mqtt broker refused the agent: check mqtt.username, mqtt.password_file and the broker's ACL; retrying, nothing is dropped",
			"client_id", c.opts.ClientID, "return_code", returnCode(err), "err", err)
	case errors.Is(err, packets.ErrorRefusedIDRejected), errors.Is(err, packets.ErrorRefusedBadProtocolVersion):
		c.log.Error("mqtt broker refused the connection; retrying, nothing is dropped",
			"client_id", c.opts.ClientID, "return_code", returnCode(err), "err", err)
	case state == "lost":
		c.log.Warn("mqtt connection lost; reconnecting", "err", err)
	default:
		c.log.Warn("mqtt connect failed; retrying", "err", err)
	}
}

// returnCode maps a paho connect error back to the CONNACK return code it came from.
func returnCode(err error) int {
	for rc, e := range packets.ConnErrors {
		if e != nil && rc != packets.Accepted && errors.Is(err, e) {
			return int(rc)
		}
	}
	return -1
}

// resumeCountingStore counts paho's resumes. paho reads All() of its store exactly when
// it resends stored messages after a (re)connect, and that resend completes the
// original publish tokens with no error and no PUBACK. A publish whose token completes
// while no resume began since it was handed to paho was completed by its PUBACK.
type resumeCountingStore struct {
	paho.Store
	resumes atomic.Uint64
}

func (s *resumeCountingStore) All() []string {
	s.resumes.Add(1)
	return s.Store.All()
}

// errUntrusted: the token completed, but across a reconnect, so no PUBACK is proven.
var errUntrusted = errors.New("mqtt: publish completed across a reconnect without a proven PUBACK")

// publish sends one QoS 1 message and returns nil only once the broker acknowledged it
// (PUBACK) on a connection that stayed up from the hand-over to paho until then.
// Any doubt is an error: the caller sends again, and consumers drop duplicate ids.
func (c *Conn) publish(ctx context.Context, topic string, retained bool, payload []byte) error {
	return c.publishAsync(topic, retained, payload)(ctx)
}

// publishAsync hands the message to paho now and returns the wait for its PUBACK.
func (c *Conn) publishAsync(topic string, retained bool, payload []byte) func(context.Context) error {
	if !c.Connected() {
		return func(context.Context) error { return ErrNotConnected }
	}
	gen, resumes := c.gen.Load(), c.store.resumes.Load()
	tok := c.client.Publish(topic, 1, retained, payload)
	return func(ctx context.Context) error {
		t := time.NewTimer(c.opts.PublishTimeout)
		defer t.Stop()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return fmt.Errorf("no PUBACK within %s", c.opts.PublishTimeout)
		}
		if err := tok.Error(); err != nil {
			return err
		}
		if c.gen.Load() != gen || c.store.resumes.Load() != resumes {
			return errUntrusted
		}
		return nil
	}
}
