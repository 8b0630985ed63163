// The shared skycrawl stack on Azure (one per deployment), deployed into an existing
// resource group:
//
//   az deployment group create -g <rg> -f deploy/azure/main.bicep \
//     -p namePrefix=skycrawl operatorKey=<secret> registryName=<acr> engineImage=<acr>.azurecr.io/skycrawl-engine:1
//
// It creates: a Key Vault holding the operator key, a storage account (state table, results container, Functions deployment
// container, and the Storage queues when bus='storage-queue'), a Service Bus namespace
// (Standard: the inbox queue; each tenant's dispatch topic comes with the tenant) unless
// bus='storage-queue', a Flex Consumption function app running functions/azure, two
// user-assigned identities (control plane, engines) and least-privilege role assignments.
// Engine containers are created at run time by the function app (Container Instances);
// tenants by ARM deployments of tenant.json. See README.md beside this file.

targetScope = 'resourceGroup'

@description('Region of everything (and of engines whose egress names no region).')
param location string = resourceGroup().location

@description('Prefix of resource names; 3-11 lowercase letters and digits.')
@minLength(3)
@maxLength(11)
param namePrefix string = 'skycrawl'

@description('Message bus: servicebus (namespace, Standard tier) or storage-queue (none).')
@allowed(['servicebus', 'storage-queue'])
param bus string = 'servicebus'

@description('Operator API key for /v1/tenants (keep it secret).')
@secure()
param operatorKey string

@description('Existing Azure Container Registry (same resource group) holding the engine image; empty: a public image.')
param registryName string = ''

@description('Engine image, e.g. <acr>.azurecr.io/skycrawl-engine:1.')
param engineImage string

@description('Housekeeping timer (NCRONTAB with seconds). Kill timers do not depend on it.')
param timerSchedule string = '0 * * * * *'

@description('Seconds an idle engine container lives before its kill timer stops it.')
param idleTtlSeconds int = 60

@description('Most function app instances (Flex Consumption).')
param maximumInstanceCount int = 40

var suffix = uniqueString(resourceGroup().id, namePrefix)
var storageName = take('${namePrefix}${suffix}', 24)
var useServiceBus = bus == 'servicebus'
var inboxQueue = 'skycrawl-inbox'
var dispatchTopic = 'skycrawl-dispatch'
var resultsContainer = 'skycrawl'
var deploymentContainer = 'function-releases'

// Built-in role definition ids.
var roles = {
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

// ------------------------------------------------------------------ identities

resource controlIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-control'
  location: location
}

resource engineIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-engine'
  location: location
}

// ------------------------------------------------------------------ secrets
//
// The operator key lives in Key Vault; the function app's setting holds only a Key Vault
// reference, resolved by the platform with the control identity when the app starts.

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: take('${namePrefix}kv${suffix}', 24)
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
  }
}

resource operatorKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'operator-key'
  properties: { value: operatorKey }
}

resource controlSecretRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(operatorKeySecret.id, controlIdentity.id, roles.keyVaultSecretsUser)
  scope: operatorKeySecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: controlIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ------------------------------------------------------------------ storage

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // Entra ID only
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource results 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: resultsContainer
}

resource releases 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainer
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource stateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: 'skycrawlstate'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource storageInbox 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = if (!useServiceBus) {
  parent: queueService
  name: inboxQueue
  properties: { metadata: { skycrawl_max_deliveries: '5' } }
}

resource storageInboxPoison 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = if (!useServiceBus) {
  parent: queueService
  name: '${inboxQueue}-poison'
}

// Each tenant's dispatch topic ('${dispatchTopic}-<tenant>') and its dead-letter queue come
// with the tenant's deployment (tenant.bicep).

// ------------------------------------------------------------------ service bus

resource namespace 'Microsoft.ServiceBus/namespaces@2021-11-01' = if (useServiceBus) {
  name: '${namePrefix}-${suffix}'
  location: location
  sku: { name: 'Standard', tier: 'Standard' }
  properties: { disableLocalAuth: true } // Entra ID only
}

resource inbox 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = if (useServiceBus) {
  parent: namespace
  name: inboxQueue
  properties: {
    maxDeliveryCount: 5
    lockDuration: 'PT1M'
    deadLetteringOnMessageExpiration: true
  }
}


// ------------------------------------------------------------------ function app

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${namePrefix}-plan'
  location: location
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

var serviceBusHost = useServiceBus ? '${namespace.name}.servicebus.windows.net' : ''
var appSettings = [
  { name: 'AzureWebJobsStorage__accountName', value: storage.name }
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'AzureWebJobsStorage__clientId', value: controlIdentity.properties.clientId }
  { name: 'SKYCRAWL_PROVIDER', value: 'azure' }
  { name: 'SKYCRAWL_INBOX_QUEUE', value: inboxQueue }
  { name: 'SKYCRAWL_DISPATCH_TOPIC', value: dispatchTopic }
  { name: 'SKYCRAWL_OPERATOR_KEY', value: '@Microsoft.KeyVault(SecretUri=${operatorKeySecret.properties.secretUri})' }
  { name: 'SKYCRAWL_PUBLIC_BASE_URL', value: 'https://${namePrefix}-${suffix}.azurewebsites.net' }
  { name: 'SKYCRAWL_ENGINE_IMAGE', value: engineImage }
  { name: 'SKYCRAWL_IDLE_TTL_S', value: string(idleTtlSeconds) }
  { name: 'SKYCRAWL_EGRESSES', value: '[{"name": "${location}", "region": "${location}"}]' }
  { name: 'SKYCRAWL_AZURE_BUS', value: bus }
  { name: 'SKYCRAWL_AZURE_TIMER_SCHEDULE', value: timerSchedule }
  { name: 'SKYCRAWL_AZURE_STORAGE_ACCOUNT', value: storage.name }
  { name: 'SKYCRAWL_AZURE_SERVICEBUS_NAMESPACE', value: serviceBusHost }
  { name: 'SKYCRAWL_AZURE_MANAGED_IDENTITY_CLIENT_ID', value: controlIdentity.properties.clientId }
  { name: 'SKYCRAWL_AZURE_SUBSCRIPTION_ID', value: subscription().subscriptionId }
  { name: 'SKYCRAWL_AZURE_RESOURCE_GROUP', value: resourceGroup().name }
  { name: 'SKYCRAWL_AZURE_LOCATION', value: location }
  { name: 'SKYCRAWL_AZURE_ENGINE_IDENTITY_ID', value: engineIdentity.id }
  { name: 'SKYCRAWL_AZURE_ENGINE_IDENTITY_CLIENT_ID', value: engineIdentity.properties.clientId }
  { name: 'SKYCRAWL_AZURE_ENGINE_IDENTITY_PRINCIPAL_ID', value: engineIdentity.properties.principalId }
  { name: 'SKYCRAWL_AZURE_TENANT_SERVICEBUS_NAMESPACE', value: useServiceBus ? namespace.name : '' }
  { name: 'SKYCRAWL_AZURE_TENANT_BLOB_ROLE_ID', value: engineBlobDataRole.name }
  { name: 'SKYCRAWL_AZURE_REGISTRY_SERVER', value: empty(registryName) ? '' : '${registryName}.azurecr.io' }
  // trigger connections (identity-based)
  { name: 'SKYCRAWL_SERVICEBUS__fullyQualifiedNamespace', value: serviceBusHost }
  { name: 'SKYCRAWL_SERVICEBUS__credential', value: 'managedidentity' }
  { name: 'SKYCRAWL_SERVICEBUS__clientId', value: controlIdentity.properties.clientId }
  { name: 'SKYCRAWL_STORAGE__queueServiceUri', value: storage.properties.primaryEndpoints.queue }
  { name: 'SKYCRAWL_STORAGE__credential', value: 'managedidentity' }
  { name: 'SKYCRAWL_STORAGE__clientId', value: controlIdentity.properties.clientId }
]

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: '${namePrefix}-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${controlIdentity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: controlIdentity.id
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: controlIdentity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: appSettings
    }
  }
  dependsOn: [releases, controlSecretRole] // the Key Vault reference resolves at start
}

// ------------------------------------------------------------------ least privilege
//
// Control plane (function app): data access to the storage account and the namespace, and a
// custom role on this resource group for exactly what it creates at run time: container
// groups (engines, with the engine identity) and tenant deployments with their tables,
// containers and queues. Engines: blobs, the queues they use, the dispatch topic (their own
// subscription), and pulling their image.

resource controlPlaneRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, namePrefix, 'skycrawl-control-plane')
  properties: {
    roleName: '${namePrefix} control plane (${resourceGroup().name})'
    description: 'Start/stop engine container groups and deploy per-tenant resources.'
    type: 'CustomRole'
    assignableScopes: [resourceGroup().id]
    permissions: [
      {
        actions: [
          'Microsoft.ContainerInstance/containerGroups/*'
          'Microsoft.Resources/deployments/*'
          'Microsoft.Resources/subscriptions/resourceGroups/read'
          'Microsoft.Storage/storageAccounts/read'
          'Microsoft.Storage/storageAccounts/tableServices/tables/*'
          'Microsoft.Storage/storageAccounts/blobServices/containers/*'
          // user delegation SAS for large exports (adapters/azure/blob_store.py)
          'Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action'
          'Microsoft.Storage/storageAccounts/queueServices/queues/*'
          'Microsoft.ServiceBus/namespaces/read'
          'Microsoft.ServiceBus/namespaces/queues/*'
          'Microsoft.ServiceBus/namespaces/topics/*'
          'Microsoft.Authorization/roleAssignments/read'
          'Microsoft.Authorization/roleAssignments/write'
          'Microsoft.Authorization/roleAssignments/delete'
          'Microsoft.ManagedIdentity/userAssignedIdentities/read'
          'Microsoft.ManagedIdentity/userAssignedIdentities/write'
          'Microsoft.ManagedIdentity/userAssignedIdentities/delete'
          'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action'
          'Microsoft.ContainerRegistry/registries/read'
        ]
        notActions: []
      }
    ]
  }
}

resource controlPlaneRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, controlIdentity.id, controlPlaneRole.id)
  properties: {
    roleDefinitionId: controlPlaneRole.id
    principalId: controlIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Blob Data Owner rather than Contributor: what the Functions host needs on AzureWebJobsStorage.
resource controlStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in [roles.blobDataOwner, roles.queueDataContributor, roles.tableDataContributor]: {
    name: guid(storage.id, controlIdentity.id, role)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
      principalId: controlIdentity.properties.principalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource controlServiceBusRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useServiceBus) {
  name: guid(resourceGroup().id, controlIdentity.id, roles.serviceBusDataOwner)
  scope: namespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
    principalId: controlIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Engines get their data access per tenant: each tenant's deployment (tenant.bicep) creates
// the tenant's own identity with this role on the results container, under a condition on
// the tenant's path, plus Data Owner on the tenant's topic, Sender on its dead-letter queue
// and Sender on the inbox. The role holds the blob data actions of Storage Blob Data
// Contributor and none of its control-plane actions (which would let an engine delete or
// reconfigure the shared container). The shared engine identity below only pulls the image;
// with the Storage-queue bus each tenant's identity gets the account's queues (tenant.bicep).
resource engineBlobDataRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, namePrefix, 'skycrawl-engine-blobs')
  properties: {
    roleName: '${namePrefix} engine blobs (${resourceGroup().name})'
    description: 'Read, write and delete blobs (no container management); assigned per tenant with a path condition.'
    type: 'CustomRole'
    assignableScopes: [resourceGroup().id]
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write'
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete'
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action'
        ]
        notDataActions: []
      }
    ]
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = if (!empty(registryName)) {
  name: registryName
}

resource enginePullRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(registryName)) {
  name: guid(resourceGroup().id, engineIdentity.id, roles.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: engineIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

output functionAppName string = functionApp.name
output apiUrl string = 'https://${functionApp.properties.defaultHostName}'
output storageAccountName string = storage.name
output serviceBusNamespace string = serviceBusHost
output engineIdentityId string = engineIdentity.id
