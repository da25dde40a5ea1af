"""The one contract: request and response models shared by server, client and node.

Nothing here may import FastAPI, psycopg or anything from `alai.server`.
"""
