package spool

import (
	"encoding/json"
	"errors"
	"io/fs"
	"time"
)

// State is where an item is in its life. See CONTRACT.md "Life of a file".
type State string

const (
	StateReceived    State = "received"
	StateUploading   State = "uploading"
	StateWaiting     State = "waiting"
	StateVerified    State = "verified"
	StatePublished   State = "published"
	StateDone        State = "done"
	StateQuarantined State = "quarantined"
	StateRejected    State = "rejected"
	StateDuplicate   State = "duplicate"
)

// AllStates lists every state in display order.
var AllStates = []State{StateReceived, StateUploading, StateWaiting, StateVerified,
	StatePublished, StateDone, StateQuarantined, StateRejected, StateDuplicate}

// Priority orders uploads: a high item is always leased before a normal or low one.
type Priority int

const (
	PriorityHigh   Priority = 0
	PriorityNormal Priority = 1
	PriorityLow    Priority = 2
)

func (p Priority) String() string {
	switch p {
	case PriorityHigh:
		return "high"
	case PriorityLow:
		return "low"
	default:
		return "normal"
	}
}

// ParsePriority maps "high", "normal", "low" (or "") to a Priority.
func ParsePriority(s string) (Priority, error) {
	switch s {
	case "high":
		return PriorityHigh, nil
	case "normal", "":
		return PriorityNormal, nil
	case "low":
		return PriorityLow, nil
	}
	return PriorityNormal, errors.New(`must be one of high, normal, low, got "` + s + `"`)
}

// Event types written to the outbox.
const (
	EventVerified    = "org.edgecourier.file.verified.v1"
	EventQuarantined = "org.edgecourier.file.quarantined.v1"
	EventRejected    = "org.edgecourier.file.rejected.v1"
	EventDuplicate   = "org.edgecourier.file.duplicate.v1"
)

// Sentinel errors callers branch on.
var (
	ErrFull      = errors.New("spool full")     // max_bytes or min_free_disk reached: try again later
	ErrTooLarge  = errors.New("file too large") // over the source's max_size: reject
	ErrEmpty     = errors.New("nothing to lease")
	ErrNotFound  = errors.New("no such item")
	ErrLeaseLost = errors.New("lease lost")
	ErrLocked    = errors.New("spool in use by another process")
	// ErrNotRetryable: Retry of an item that is neither quarantined nor waiting.
	ErrNotRetryable = errors.New("item is not quarantined or waiting")
	// ErrCorrupt: the database failed its integrity check (or is not a database). The
	// agent must not start; the error names the file and says to run RecoverCommand.
	ErrCorrupt = errors.New("spool database damaged")
	// ErrNeedsRecovery: the database is new or empty while content/ holds files (it was
	// deleted, emptied or lost its WAL). The error says to run RecoverCommand.
	ErrNeedsRecovery = errors.New("spool database lost")
	// ErrReadOnly: a write on a spool opened with OpenReadOnly.
	ErrReadOnly = errors.New("spool opened read-only")
	// ErrContentMissing: an item's stored bytes are gone. It also matches fs.ErrNotExist
	// (errors.Is), so a caller checking either finds it.
	ErrContentMissing error = contentMissing{}
)

type contentMissing struct{}

func (contentMissing) Error() string        { return "stored content missing" }
func (contentMissing) Is(target error) bool { return target == fs.ErrNotExist }

// Item is one file in the spool. Fields marked (private) may carry patient data
// and must never be logged or put in events unless privacy allows it.
type Item struct {
	ID          string // UUIDv7
	Source      string // source name from the config
	SourceKind  string // "folder" | "mqtt"
	SourceRef   string // (private) path relative to the source root, or the MQTT topic
	Filename    string // (private) base name
	Size        int64
	SHA256      string // hex
	SHA1        string // hex; FHIR R4 Attachment.hash needs SHA-1
	ContentType string // sniffed from the bytes
	Priority    Priority
	State       State
	Attempts    int       // failures where the server answered about this file (5xx, 460)
	Tries       int       // upload attempts of any kind, for the event's "attempts"
	NextAttempt time.Time // when a waiting item may be leased again
	UploadURL   string    // tus upload URL, stored before the first PATCH
	Location    string    // URL of the verified object
	ReceivedAt  time.Time
	VerifiedAt  time.Time
	UpdatedAt   time.Time
	LastError   string            // no patient data: ids, codes, sizes only
	LeaseOwner  string            // who is uploading it now, "" if nobody
	LeaseUntil  time.Time         // when that lease runs out unless renewed
	Meta        map[string]string // e.g. MQTT topic levels; never raw patient data

	// From the Envelope (HL7 and similar).
	Envelope        json.RawMessage // goes to the event's data.hl7, may be nil
	DuplicateOf     string          // for StateDuplicate: the earlier item's id
	Corrects        string          // id of the item this one corrects, "" if none
	ControlIDReused bool            // same DedupeKey seen with other content
	Reason          string          // why rejected/quarantined (no patient data)
}

// Intake describes a file being handed to the spool by a source.
type Intake struct {
	Source     string
	SourceKind string
	SourceRef  string
	Filename   string
	Priority   Priority
	Meta       map[string]string
	MaxSize    int64 // 0 = no limit; over it Receive returns ErrTooLarge and stores nothing
	// Fingerprint, when set, is recorded with the item in the same transaction, so a
	// folder source with after: keep never takes the same file twice (HasFingerprint).
	Fingerprint string
	// NoInspect skips the inspector for this file (a source with hl7: off).
	NoInspect bool
}

// Envelope is what an inspector (agent/hl7) learned from the stored bytes.
// All keys are opaque to the spool; none may contain raw patient identifiers.
type Envelope struct {
	// DedupeKey identifies the message independent of its bytes (HL7: MSH-3|MSH-4|MSH-10).
	// "" means the default rule: same source and same SHA-256.
	DedupeKey string
	// ContentKey must also match for a duplicate (HL7: digest of the bytes without MSH-7).
	// Same DedupeKey with another ContentKey: not a duplicate, ControlIDReused is set.
	ContentKey string
	// OrderKey groups messages that correct one another (HL7: MSH-3|MSH-4|OBR-3).
	OrderKey string
	// IsCorrection: this message corrects the latest earlier item with the same OrderKey.
	IsCorrection bool
	// ContentType overrides the sniffed type when not "".
	ContentType string
	// Data is put in the event as data.hl7 (the spool adds corrects/control_id_reused there).
	Data json.RawMessage
	// Parts is how many parts (HL7 attachments) Options.Split will find in the item.
	Parts int
}

// Inspector reads a spooled file (already durable, at path) and returns its Envelope,
// or nil when the content has nothing to say (not HL7). It must not fail the intake:
// garbage yields nil.
type Inspector func(path string) *Envelope

// OutboxEvent is one event waiting for one sink.
type OutboxEvent struct {
	Seq       int64
	ItemID    string
	Type      string
	Sink      string    // "" in Events (any sink)
	CreatedAt time.Time // when the state change it reports was committed
	Item      *Item     // the item as it is now, to build the event from
}

// Counts is the number of items per state plus the oldest waiting item.
type Counts struct {
	ByState       map[State]int
	OldestWaiting time.Time // received_at of the oldest item not yet uploaded (received, uploading, waiting); zero if none
	Bytes         int64     // spooled content bytes
}
