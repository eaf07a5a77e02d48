//! In-process implementation of the job-broker port.
