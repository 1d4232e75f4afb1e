"""The local serverless platform: functions, instances, scaling, admission, meter, HTTP API."""
