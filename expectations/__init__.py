"""Great Expectations suites (stored as JSON files beside this module) and validation entry points."""
