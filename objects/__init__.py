"""tornado_dsm.objects: the clustered objects that make up virtual memory."""
