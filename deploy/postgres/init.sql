-- One server, two databases: the services never share tables (DESIGN §2, §8).
CREATE DATABASE payments;
CREATE DATABASE orders;
