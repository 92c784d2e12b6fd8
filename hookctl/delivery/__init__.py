"""Delivery: policy, preparing deliveries, the pipeline that sends and records, admission, notices, reports."""
