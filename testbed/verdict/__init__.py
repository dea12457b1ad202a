"""The oracle predicts, the judge compares, the report tells: pure, over core's records."""
