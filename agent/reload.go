package agent

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/edgecourier/courier/agent/config"
	"github.com/edgecourier/courier/uploader"
)

// ErrNeedsRestart is wrapped by Apply's error when the new configuration changed keys
// that a running agent cannot change: everything else was applied.
var ErrNeedsRestart = errors.New("some changes take effect only after a restart")

// ErrNotRunning: Apply was called while Run was not running.
var ErrNotRunning = errors.New("agent is not running")

// RestartError lists the keys whose new values wait for a restart.
type RestartError struct {
	Keys []string
}

func (e *RestartError) Error() string {
	return fmt.Sprintf("%s: %s", ErrNeedsRestart, strings.Join(e.Keys, ", "))
}

func (e *RestartError) Unwrap() error { return ErrNeedsRestart }

type applyRequest struct {
	ctx    context.Context
	cfg    *config.Config
	origin string
	reply  chan error
}

// Apply makes a running agent follow cfg, which must be loaded and validated
// (config.Load, config.Parse). origin says where it came from ("sighup",
// "remote"), for the log. It is the one reload path: SIGHUP and remote
// configuration both call it.
//
// Every new component is built before anything running is touched; if one cannot
// be built, Apply returns that error and the agent goes on exactly as before. Then
// the parts that changed are swapped, and only those:
//
//   - sources[] of kind folder, by name: removed and changed ones stop, new and
//     changed ones start; unchanged ones are not touched.
//   - mqtt.* and sources[] of kind mqtt: the connection, its feeds and the status
//     publisher are replaced together (they share one persistent session; messages
//     held meanwhile stay unacknowledged with the broker and are redelivered).
//   - upload.*, privacy.send_filenames: the uploader is replaced. Its in-flight
//     uploads are cancelled and their leases handed back with the upload URL kept;
//     the new uploader takes them and resumes at the server's offset (HEAD), so
//     nothing is created or sent twice.
//   - events.file (path), privacy.send_filenames: the publisher and its sinks.
//   - log.level, http.listen.
//
// Keys a running agent cannot change (agent.id, agent.data_dir, spool.*,
// privacy.id_salt_file, log.format, remote_config.*, sources of kind mllp, turning
// the broker or an event sink on or off) keep their old values; Apply logs them and returns a
// *RestartError (errors.Is(err, ErrNeedsRestart)) after applying the rest.
func (a *Agent) Apply(ctx context.Context, cfg *config.Config, origin string) error {
	req := applyRequest{ctx: ctx, cfg: cfg, origin: origin, reply: make(chan error, 1)}
	select {
	case a.applyCh <- req:
	case <-a.runDone:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-a.runDone:
		return ErrNotRunning
	}
}

// supervise carries out Apply's requests until Run's group ends.
func (a *Agent) supervise(r *running) {
	for {
		select {
		case <-r.ctx.Done():
			return
		case req := <-a.applyCh:
			err := a.apply(req.ctx, r, req.cfg, req.origin)
			result := "applied"
			switch {
			case errors.Is(err, ErrNeedsRestart):
				result = "partial"
			case err != nil:
				result = "failed"
			}
			a.metrics.reloads.WithLabelValues(result).Inc()
			req.reply <- err
		}
	}
}

// restartOnly reports the keys of next that differ from cur but cannot change live,
// and sets them in next back to cur's values, so next is what will really run.
func restartOnly(cur, next *config.Config) []string {
	var keys []string
	keep := func(key string, changed bool, revert func()) {
		if changed {
			keys = append(keys, key)
			revert()
		}
	}
	keep("agent.id", cur.Agent.ID != next.Agent.ID, func() { next.Agent.ID = cur.Agent.ID })
	keep("agent.data_dir", cur.Agent.DataDir != next.Agent.DataDir, func() { next.Agent.DataDir = cur.Agent.DataDir })
	keep("spool", !reflect.DeepEqual(cur.Spool, next.Spool), func() { next.Spool = cur.Spool })
	keep("privacy.id_salt_file", cur.Privacy.IDSaltFile != next.Privacy.IDSaltFile, func() { next.Privacy.IDSaltFile = cur.Privacy.IDSaltFile })
	keep("log.format", cur.Log.Format != next.Log.Format, func() { next.Log.Format = cur.Log.Format })
	keep("remote_config", !reflect.DeepEqual(cur.RemoteConfig, next.RemoteConfig), func() { next.RemoteConfig = cur.RemoteConfig })
	// The spool keeps one outbox row per event and sink: the set of sinks is fixed
	// while it is open. A new events.file path for the file sink is fine.
	keep("mqtt.broker (turning MQTT on or off)", (cur.MQTT.Broker == "") != (next.MQTT.Broker == ""), func() {
		next.MQTT = cur.MQTT
		next.Sources = slices.DeleteFunc(next.Sources, func(s config.Source) bool { return s.Kind == "mqtt" })
		for _, s := range cur.Sources {
			if s.Kind == "mqtt" {
				next.Sources = append(next.Sources, s)
			}
		}
	})
	// An mllp listener's port is bound at start; rebinding it live is not done yet.
	keep("sources (kind: mllp)", !reflect.DeepEqual(sourcesOfKind(cur, "mllp"), sourcesOfKind(next, "mllp")), func() {
		next.Sources = slices.DeleteFunc(next.Sources, func(s config.Source) bool { return s.Kind == "mllp" })
		next.Sources = append(next.Sources, sourcesOfKind(cur, "mllp")...)
	})
	keep("events.file (turning it on or off)", (cur.Events.File == "") != (next.Events.File == ""), func() { next.Events.File = cur.Events.File })
	keep("events.mqtt", boolOf(cur.Events.MQTT) != boolOf(next.Events.MQTT), func() { next.Events.MQTT = cur.Events.MQTT })
	return keys
}

func boolOf(b *bool) bool { return b != nil && *b }

// apply runs on Run's supervisor goroutine, so swaps never race each other.
func (a *Agent) apply(ctx context.Context, r *running, in *config.Config, origin string) error {
	if in == nil {
		return errors.New("apply: no configuration")
	}
	a.mu.Lock()
	cur := a.cfg
	a.mu.Unlock()
	next := *in
	next.Sources = slices.Clone(in.Sources)
	log := a.log.With("origin", origin)
	needRestart := restartOnly(cur, &next)

	// What changed.
	curSrc, nextSrc := sourcesByName(cur, "folder"), sourcesByName(&next, "folder")
	var stopFolders []string
	startFolders := map[string]bool{}
	for name, sc := range curSrc {
		if n, ok := nextSrc[name]; !ok || !reflect.DeepEqual(sc, n) {
			stopFolders = append(stopFolders, name)
		}
	}
	for name, sc := range nextSrc {
		if c, ok := curSrc[name]; !ok || !reflect.DeepEqual(sc, c) {
			startFolders[name] = true
		}
	}
	mqttChanged := !reflect.DeepEqual(cur.MQTT, next.MQTT) ||
		!reflect.DeepEqual(mqttSources(cur), mqttSources(&next)) || cur.Agent.ID != next.Agent.ID
	uploadChanged := !reflect.DeepEqual(cur.Upload, next.Upload) || cur.Privacy.SendFilenames != next.Privacy.SendFilenames
	eventsChanged := !reflect.DeepEqual(cur.Events, next.Events) || cur.Privacy.SendFilenames != next.Privacy.SendFilenames || mqttChanged
	httpChanged := cur.HTTP.Listen != next.HTTP.Listen

	// Build everything new before touching what runs.
	folders, err := a.buildFolders(&next, startFolders)
	if err != nil {
		return fmt.Errorf("apply %s configuration: %w", origin, err)
	}
	var up *uploader.Uploader
	if uploadChanged {
		if up, err = a.buildUploader(&next); err != nil {
			return fmt.Errorf("apply %s configuration: %w", origin, err)
		}
	}
	var mq *mqttParts
	if mqttChanged && next.MQTT.Broker != "" {
		if mq, err = a.buildMQTT(&next); err != nil {
			return fmt.Errorf("apply %s configuration: %w", origin, err)
		}
		if err := mq.addFeeds(&next, a.spool); err != nil {
			mq.close()
			return fmt.Errorf("apply %s configuration: %w", origin, err)
		}
		mq.status = a.newStatusPublisher(mq.c)
	}
	var sinks *sinkSet
	if eventsChanged {
		conn := a.mq.conn()
		if mqttChanged {
			conn = mq.conn()
		}
		if sinks, err = agentSinks(&next, conn, a.opts.EventsTee, a.log); err != nil {
			mq.close()
			return fmt.Errorf("apply %s configuration: %w", origin, err)
		}
	}

	// Swap. Stop before start wherever two generations must not overlap.
	for _, name := range stopFolders {
		r.folders[name].stop()
		delete(r.folders, name)
	}
	for name, src := range folders {
		r.folders[name] = r.start("folder source "+name, src.Run)
	}
	if eventsChanged {
		r.publisher.stop() // before the sinks or the connection it publishes on go
	}
	if mqttChanged {
		r.mqttStatus.stop()
		a.mu.Lock()
		old := a.mq
		a.mq = mq
		a.mu.Unlock()
		old.close()
		if err := mq.start(r.ctx); err != nil {
			log.Error("reload: mqtt connection did not start", "err", err)
		}
		r.mqttStatus = a.startMQTTStatus(r, mq)
	}
	if eventsChanged {
		a.mu.Lock()
		old := a.sinks
		a.sinks = sinks
		a.mu.Unlock()
		if err := old.Close(); err != nil {
			log.Warn("reload: closing the old event sinks failed", "err", err)
		}
		r.publisher = r.start("events", a.publisher(&next, sinks).Run)
	}
	if uploadChanged {
		// The old workers hand their leases back (upload URL kept) before the new
		// ones look: an item is never held by both.
		r.uploader.stop()
		a.mu.Lock()
		a.uploader = up
		a.mu.Unlock()
		r.uploader = r.start("uploader", up.Run)
	}
	if httpChanged {
		r.http.stop()
		r.http = a.startHTTP(r, next.HTTP.Listen)
	}
	a.setLevel(&next)
	a.mu.Lock()
	a.cfg = &next
	a.mu.Unlock()

	var changed []string
	if len(stopFolders)+len(folders) > 0 {
		changed = append(changed, "sources (folder)")
	}
	for _, c := range []struct {
		key string
		ok  bool
	}{{"mqtt", mqttChanged}, {"upload", uploadChanged}, {"events", eventsChanged}, {"http.listen", httpChanged}, {"log.level", cur.Log.Level != next.Log.Level}} {
		if c.ok {
			changed = append(changed, c.key)
		}
	}
	log.Info("configuration reloaded", "file", next.File, "changed", changed,
		"folders_stopped", len(stopFolders), "folders_started", len(folders))
	if len(needRestart) > 0 {
		log.Warn("configuration changes that need a restart were not applied", "keys", needRestart)
		return &RestartError{Keys: needRestart}
	}
	return nil
}

func sourcesByName(cfg *config.Config, kind string) map[string]config.Source {
	m := map[string]config.Source{}
	for _, s := range cfg.Sources {
		if s.Kind == kind {
			m[s.Name] = s
		}
	}
	return m
}

func mqttSources(cfg *config.Config) []config.Source { return sourcesOfKind(cfg, "mqtt") }

func sourcesOfKind(cfg *config.Config, kind string) []config.Source {
	var out []config.Source
	for _, s := range cfg.Sources {
		if s.Kind == kind {
			out = append(out, s)
		}
	}
	return out
}
