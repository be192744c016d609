# moto_server with each request handled under one lock.
#
# moto checks the conditions of conditional writes (If-None-Match, If-Match)
# and then writes, without a lock, on a threaded server: two racing requests
# can both pass the check, which real S3 never allows. Handling each request
# under a global lock makes a conditional write atomic, as it is in S3.
# Connections are still accepted in parallel.
#
# Usage: VENV/bin/python scripts/moto_serialized.py -H 127.0.0.1 -p PORT
# (the arguments of moto_server). Used by the Rust tests (tests/common/moto.rs,
# crates/imgbuild-aws/tests/s3.rs) and scripts/bench-s3-rss.sh.
import sys, threading
from moto import server
from moto.moto_server import werkzeug_app
lock = threading.Lock()
handle = werkzeug_app.DomainDispatcherApplication.__call__
def serialized(self, environ, start_response):
    with lock:
        return handle(self, environ, start_response)
werkzeug_app.DomainDispatcherApplication.__call__ = serialized

# IMGBUILD_MOTO_PENDING_AMIS=1: AMIs made by CreateImage stay `pending`, as a
# slow real AMI does, so tests can interrupt (or time out) the wait for
# `available`; moto otherwise makes them available at once.
import os
if os.environ.get("IMGBUILD_MOTO_PENDING_AMIS") == "1":
    from moto.ec2.models import amis
    ami_init = amis.Ami.__init__
    def pending_when_captured(self, *args, **kwargs):
        ami_init(self, *args, **kwargs)
        # Ami(ec2_backend, ami_id, instance=None, ...): captured from an instance
        if kwargs.get("instance") is not None or (len(args) > 2 and args[2] is not None):
            self.state = "pending"
    amis.Ami.__init__ = pending_when_captured

# IMGBUILD_MOTO_NO_SPOT_CAPACITY=1: spot RunInstances requests are refused
# with InsufficientInstanceCapacity, as EC2 does when the market is dry.
if os.environ.get("IMGBUILD_MOTO_NO_SPOT_CAPACITY") == "1":
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses.instances import InstanceResponse
    run_instances = InstanceResponse.run_instances
    def no_spot(self):
        if self._get_param("InstanceMarketOptions.MarketType") == "spot":
            raise EC2ClientError("InsufficientInstanceCapacity", "There is no Spot capacity available that matches your request.")
        return run_instances(self)
    InstanceResponse.run_instances = no_spot

server.main(sys.argv[1:])
