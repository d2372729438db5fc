# Image for docker-compose.yaml: the official Airflow image plus rftflow's pinned stack.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt /requirements.txt
# torch first and pinned (the CPU build), then the rest of the pinned stack
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir -r /requirements.txt
ENV PYTHONPATH=/opt/airflow
