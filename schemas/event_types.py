"""The public event types of topic citizen-events, one table for the writer and every reader.

Each type names the Avro payload record that carries it (`schemas/citizen_event.v1.avsc`).
"""

from __future__ import annotations

REGISTRATION_RECEIVED = "registration_received"
REGISTRATION_DECIDED = "registration_decided"
ACCOUNT_ACTIVATED = "account_activated"
STATUS_CHANGED = "status_changed"
PERSONAL_DATA_ERASED = "personal_data_erased"  # the citizen's data key was destroyed
HISTORY_READ = "history_read"  # an access record: about an account, not part of its history

# public event type -> Avro payload record name
PAYLOAD_RECORDS: dict[str, str] = {
    REGISTRATION_RECEIVED: "RegistrationReceived",
    REGISTRATION_DECIDED: "RegistrationDecided",
    ACCOUNT_ACTIVATED: "AccountActivated",
    STATUS_CHANGED: "StatusChanged",
    PERSONAL_DATA_ERASED: "PersonalDataErased",
    HISTORY_READ: "HistoryRead",
}
