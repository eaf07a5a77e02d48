//! RabbitMQ implementation of the job-broker port.
