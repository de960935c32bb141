import { App } from "aws-cdk-lib";
import { buildApp } from "./googlenet-eval-app.js";

buildApp(new App());
