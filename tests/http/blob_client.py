#!/usr/bin/env python3
"""Azure Blob Storage through the gateway with Microsoft's SDK (azure-storage-blob).

    blob_client.py ACCOUNT_URL CA_FILE TOKEN STEP...

The SDK authenticates with a token credential that hands it the caller's Portcullis token
(sent as `Authorization: Bearer`); the gateway replaces it with a Shared Key signature.
Steps: create, upload, list, download, make-public, delete-blob, delete-container. Prints one JSON line
per step: {"step", "ok", "status", "result" | "error"}.
"""
import hashlib
import json
import sys
import time

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

account_url, ca, token = sys.argv[1:4]
steps = sys.argv[4:]
DATA = bytes(i % 251 for i in range(3 * 1024 * 1024))


class CallerToken:
    def get_token(self, *scopes, **kwargs):
        return AccessToken(token, int(time.time()) + 600)


# Small blocks, so a 3 MiB upload is several Put Block requests and a Put Block List.
svc = BlobServiceClient(account_url, credential=CallerToken(), connection_verify=ca,
                        max_single_put_size=1024 * 1024, max_block_size=1024 * 1024)
box = svc.get_container_client("reports")
blob = box.get_blob_client("2026/q4.bin")

for step in steps:
    out = {"step": step}
    try:
        if step == "create":
            box.create_container()
            out["result"] = "created"
        elif step == "upload":
            blob.upload_blob(DATA, overwrite=True)
            out["result"] = hashlib.sha256(DATA).hexdigest()
        elif step == "list":
            out["result"] = [b.name for b in box.list_blobs()]
        elif step == "download":
            out["result"] = hashlib.sha256(blob.download_blob().readall()).hexdigest()
        elif step == "make-public":
            box.set_container_access_policy(signed_identifiers={}, public_access="container")
            out["result"] = "public"
        elif step == "delete-blob":
            blob.delete_blob()
            out["result"] = "deleted"
        elif step == "delete-container":
            box.delete_container()
            out["result"] = "deleted"
        out["ok"] = True
    except HttpResponseError as e:
        out["ok"] = False
        out["status"] = e.status_code
        out["error"] = str(e.message or e)[:400]
    print(json.dumps(out), flush=True)
