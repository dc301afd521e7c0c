"""Feast feature repository and the pure feature functions shared by stream and batch."""
