package agent

import (
	"github.com/edgecourier/courier/agent/hl7"
	"github.com/edgecourier/courier/spool"
)

// The agent is where agent/hl7 meets the spool: the spool reads envelopes through
// inspector, the events carry the FHIR DocumentReference built by fhirDocRef.

// inspector reads HL7 v2 envelopes. It is always installed: sources with hl7: off
// set Intake.NoInspect, so a reload that turns hl7 on for a source needs no new spool.
func inspector(salt []byte) spool.Inspector {
	return hl7.Inspector(salt, 16<<20)
}

func fhirDocRef(it *spool.Item) (any, bool) {
	return hl7.DocRefFromItem(it)
}
