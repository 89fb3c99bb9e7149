// Package mqtt is the agent's MQTT side: one broker connection (Conn) that carries
// device feeds in (Feed, `kind: mqtt` sources), events out (EventSink, topic
// courier/<agent-id>/events) and the agent's retained status (StatusPublisher,
// courier/<agent-id>/status, with the last will {"state":"offline"}).
//
// What it owns:
//   - The session: clean session off and a stable client id (courier-<agent-id>), so
//     the broker keeps QoS 1 messages for us while the agent is down; subscriptions
//     are made again on every connect; automatic reconnect with backoff; a broker that
//     refuses us (bad credentials, not authorised) is logged once per change, with
//     its return code, and retried forever — a configuration problem never drops data.
//   - Acknowledgement: manual. A feed message is acknowledged only after the spool
//     returned nil (durable, a recorded duplicate, or a recorded rejection). While the
//     spool is full a message is held unacknowledged and retried with backoff; the
//     broker's in-flight window then keeps everything else queued on its side.
//     Messages arriving on a topic no feed routes (a subscription left in the session
//     by an earlier config) are recorded as rejected, never silently dropped.
//   - Trust in PUBACKs: paho completes publish tokens without error when it resends
//     stored messages after a reconnect (eclipse/paho.mqtt.golang#563), without any
//     PUBACK. A publish is reported done only if its token completed with no error and
//     no reconnect or store resend happened since it was handed to paho; anything else
//     is an error and the outbox sends the event again (same id; consumers dedupe).
//
// The broker must be allowed to keep what it holds for us: Mosquitto queues at most
// max_queued_messages (default 1000) QoS 1 messages per offline or busy session and
// drops the rest, so a broker feeding Courier needs "max_queued_messages 0" (or a
// limit sized for the longest outage) and persistence on.
//
// What it must not do: keep data of its own (the spool does), log payloads or topics
// at info level (topics may name patients or devices; items carry them as private
// fields), or decide whether an item is published (the spool's outbox does, from the
// sink's answer).
//
// Wiring order: New, then NewFeed/NewStatusPublisher/OnConnect, then Start; on
// shutdown stop StatusPublisher.Run first (it leaves {"state":"offline"}), then
// Conn.Close.
package mqtt
