"""Card-transaction simulator (Fraud Detection Handbook model + geo scenarios) and Kafka producer."""
